//! Version 2 of the hot-reload test plugin (the body is shared with its sibling).

const VERSION: &str = "2.0.0";

include!("../../versioned.rs");
