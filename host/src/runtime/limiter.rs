//! The store's resource limiter: wasmtime's `StoreLimits`, plus a record of the memory size
//! a guest was refused, so a load or execution that hit `limits.memory_mib` can say how much
//! it needed instead of passing on wasmtime's "forcing trap when growing memory".

use wasmtime::{ResourceLimiter, StoreLimits};

/// Delegates every decision to [`StoreLimits`]; remembers the largest refused memory size.
pub(crate) struct Limiter {
    limits: StoreLimits,
    memory_limit: usize,
    refused_memory: Option<usize>,
}

impl Limiter {
    pub fn new(limits: StoreLimits, memory_limit: usize) -> Self {
        Self {
            limits,
            memory_limit,
            refused_memory: None,
        }
    }

    /// Bytes of linear memory the guest asked for beyond its limit, if it did.
    pub fn refused_memory(&self) -> Option<usize> {
        self.refused_memory
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.refused_memory = Some(self.refused_memory.unwrap_or(0).max(desired));
        }
        self.limits.memory_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// The sentence for a guest refused memory: the manifest key, the size it asked for and
/// the smallest `memory_mib` that would have allowed it.
pub(crate) fn memory_advice(refused: usize, limit_bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let needed_mib = (refused as u64).div_ceil(1024 * 1024);
    format!(
        "the component needed {:.1} MiB of linear memory ({refused} bytes) but its manifest \
         allows `limits.memory_mib = {}`: set `limits.memory_mib` to at least {needed_mib}",
        refused as f64 / MIB,
        limit_bytes / (1024 * 1024),
    )
}

#[cfg(test)]
mod tests {
    use super::memory_advice;

    #[test]
    fn the_advice_names_the_key_and_the_size_needed() {
        let text = memory_advice(9_502_720, 4 * 1024 * 1024);
        assert!(text.contains("`limits.memory_mib = 4`"), "{text}");
        assert!(text.contains("9502720 bytes"), "{text}");
        assert!(text.contains("at least 10"), "{text}");
    }
}
