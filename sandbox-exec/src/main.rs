//! rdev's sandbox helper, run by bubblewrap inside every confined spawn. A crate of its own
//! so that it stays small: exec'ing the whole `rdev` for each spawn cost milliseconds.

fn main() {
    rdev_sandbox_exec::exec_helper();
}
