//! HTML for the dashboard's pages: escaping and the shared layout. Every value that came
//! from a request, a guest or the store goes through [`esc`].

use std::fmt::Write as _;

use axum::http::StatusCode;

/// `text` safe inside HTML text and double-quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page in the dashboard's layout: the navigation (with sign-out for a signed-in
/// viewer, whose CSRF token is `csrf`) and `body`.
pub fn page(title: &str, csrf: Option<&str>, body: &str) -> String {
    let mut nav = String::new();
    if let Some(csrf) = csrf {
        let _ = write!(
            nav,
            "<nav><a href=\"/ui/projects\">Projects</a> <a href=\"/ui/providers\">Providers</a>\
             <form method=\"post\" action=\"/ui/logout\" class=\"signout\">\
             <input type=\"hidden\" name=\"_csrf\" value=\"{}\">\
             <button type=\"submit\" id=\"sign-out\">Sign out</button></form></nav>",
            esc(csrf)
        );
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · rdev</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/app.css\">\
         <script src=\"/ui/assets/app.js\" defer></script></head>\
         <body><header><a class=\"brand\" href=\"/ui/projects\">rdev</a>{nav}</header>\
         <main>{body}</main></body></html>\n",
        title = esc(title),
    )
}

/// A hidden field with the session's CSRF token, for a form the script sends.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"_csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// A one-button form the script sends as `method path` with an empty JSON body; `then`
/// says where to go afterwards (`reload`, or a path).
pub fn action_button(csrf: &str, method: &str, path: &str, label: &str, then: &str) -> String {
    format!(
        "<form class=\"inline\" data-api=\"{path}\" data-method=\"{method}\" data-then=\"{then}\">\
         {csrf}<button type=\"submit\">{label}</button><span class=\"error\" data-error></span></form>",
        path = esc(path),
        method = esc(method),
        then = esc(then),
        label = esc(label),
        csrf = csrf_field(csrf),
    )
}

/// The page shown for an error.
pub fn error_page(status: StatusCode, message: &str) -> String {
    let body = format!(
        "<h1>{}</h1><p class=\"problem\">{}</p><p><a href=\"/ui/projects\">Back to projects</a></p>",
        status.as_u16(),
        esc(message)
    );
    page(status.canonical_reason().unwrap_or("Error"), None, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        let page = page("<b>", Some("\"csrf"), "");
        assert!(page.contains("&lt;b&gt; · rdev"));
        assert!(page.contains("value=\"&quot;csrf\""));
    }
}
