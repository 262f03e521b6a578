//! Version 1 of the hot-reload test plugin (the body is shared with its sibling).

const VERSION: &str = "1.0.0";

include!("../../versioned.rs");
