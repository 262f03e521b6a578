//! The paging rules the listing routes share: the range of a `limit` query parameter and
//! the cursor of the next page.

use super::error::ApiError;

/// `limit`, or `default` without one; 400 `invalid_limit` outside 1 to `max`, so every
/// listing refuses a page size the same way.
pub fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {max}"),
        ));
    }
    Ok(limit)
}

/// The cursor of the page after `page`: `key` of its last item when the page is full
/// (`limit` items), `None` on the last page.
pub fn next_cursor<T, K>(page: &[T], limit: u32, key: impl FnOnce(&T) -> K) -> Option<K> {
    if page.len() == limit as usize {
        page.last().map(key)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_outside_its_range_is_refused_and_none_takes_the_default() {
        assert_eq!(page_limit(None, 50, 500), Ok(50));
        assert_eq!(page_limit(Some(500), 50, 500), Ok(500));
        for wrong in [0, 501] {
            let error = page_limit(Some(wrong), 50, 500).expect_err("out of range");
            assert_eq!(error.code, "invalid_limit");
            assert_eq!(error.message, "limit must be between 1 and 500");
        }
    }

    #[test]
    fn only_a_full_page_has_a_next_cursor() {
        assert_eq!(next_cursor(&[1, 2, 3], 3, |n| n * 10), Some(30));
        assert_eq!(next_cursor(&[1, 2], 3, |n| n * 10), None);
        assert_eq!(next_cursor::<i32, i32>(&[], 0, |n| *n), None);
    }
}
