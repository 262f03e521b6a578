//! The application services: rdev's features, each written once against the ports and used
//! by the API, the CLI and background tasks alike. The layers around them (`api`, `worker`,
//! `cli`, `adapters`) are the ways in and out; here is what rdev does besides running
//! commands.
//!
//! - [`approvals`]: deciding agents' permission requests (policy, people, timeouts) and
//!   delivering follow-up input.
//! - [`templates`]: project templates, loaded, checked and rendered in memory.
//! - [`project_setup`]: creating a project from a template (workspace, first commit, CI
//!   registration) and following its CI pipelines.
//! - [`webhooks`]: recording project events for webhooks and delivering the outbox.
//! - [`plugins`]: publishing plugins to an OCI registry and installing them from one.
//! - [`master_key`]: rotating the master key without losing a secret to a crash.
//! - [`audit_checkpoints`]: exporting signed audit chain heads off the box.
//! - [`budgets`]: refusing and stopping commands once a project's monthly budget is spent.
//! - [`changes`]: recording what each command changed in its project's workspace.

pub mod approvals;
pub mod audit_checkpoints;
pub mod budgets;
pub mod changes;
pub mod master_key;
pub mod plugins;
pub mod project_setup;
pub mod templates;
pub mod webhooks;
