//! The tool registry of the allowlisted exec API (`POST /exec/{tool}/{cmd}`).
//!
//! Operators declare *tools* and their *commands* in files of a watched directory (`tools_dir`); callers
//! may run exactly those commands, with args that are declared, checked and substituted one argv slot at a
//! time. Never a shell.
//!
//! - [`ToolRegistry`]: loads the directory ([`ToolRegistry::load`]), hands out the current
//!   [`ToolIndex`] ([`ToolRegistry::current`]), reloads it ([`ToolRegistry::reload`]) and watches the
//!   directory ([`ToolRegistry::watch`]). A reload builds a new index aside and swaps it in whole.
//! - [`ToolIndex`]: an immutable snapshot: [`ToolIndex::lookup`] of a command, [`ToolIndex::tools`] as
//!   plain data for `GET /tools`, [`ToolIndex::errors`] for the files that were skipped.
//! - [`CommandSpec::invocation`] / [`CommandSpec::resolve`]: the runner's core. Caller args in, argv out,
//!   or an [`ArgError`] that names the arg (an HTTP 400).
//!
//! # Tool files
//!
//! `*.toml` (corral) and `*.json` (tailkit, loaded unchanged). Hidden files (`.x.toml`, which covers
//! `.#x.toml`, `.x.toml.swp` and `tailkit.Install`'s `.tailkit-tmp-*`), `x.toml~`, `#x.toml#` and any
//! other extension are ignored. Files are read in name order; each is at most [`MAX_FILE_SIZE`] bytes
//! of UTF-8 and must be a regular file (a symlink to one is fine).
//!
//! corral TOML (unknown keys are errors):
//!
//! ```toml
//! name = "docker"                  # default: the file stem
//! description = "Container operations"
//! [[command]]
//! name = "restart"
//! description = "Restart one container"
//! exec = ["/usr/bin/docker", "restart", "{{container}}"]
//! timeout = "30s"                  # required, more than zero
//! concurrency = 1                  # optional: at most N runs at once
//! acl_cap = "ops"                  # optional (tailkit's capability)
//! [[command.arg]]
//! name = "container"
//! required = true
//! pattern = "^[a-zA-Z0-9_.-]+$"    # matched against the whole value
//! # default = "..."   (optional args only)   secret = false   max_len = 4096   description = "..."
//! ```
//!
//! tailkit JSON, as `tailkit.Install` writes a `tailkit.Tool` (github.com/wf-pro-dev/tailkit, `types.go`):
//!
//! ```json
//! {
//!   "name": "devbox", "version": "1.4.0", "tsnet_host": "devbox",
//!   "commands": [{
//!     "name": "docker-compose-restart",
//!     "description": "Restart a Docker Compose service by name",
//!     "acl_cap": "devbox:docker-compose-restart",
//!     "exec_parts": ["/usr/bin/docker", "compose", "restart", "{{.service}}"],
//!     "timeout": 60000000000,
//!     "args": [{"name": "service", "type": "string", "required": true, "pattern": "^[a-zA-Z0-9_-]+$"}]
//!   }]
//! }
//! ```
//!
//! `timeout` is Go's `time.Duration`: integer nanoseconds (a string such as `"30s"` is accepted too);
//! `version` is kept for listings, `tsnet_host` is ignored; `args[].type` (`string`, `int`, `bool`) is
//! enforced on values. JSON files may also carry corral's extras (`description` on the tool and args,
//! `concurrency`, `default`, `secret`, `max_len`). Other unknown fields are ignored and logged at debug
//! level, since tailkit files may carry fields corral does not use. The JSON tool `name` is required.
//!
//! # Rules (a file breaking one is skipped, with an error naming the file and the reason)
//!
//! - Syntax errors carry the line and column. Unknown keys in TOML.
//! - Tool and command names: letters, digits, `_`, `-`, `.`, starting with a letter or digit (they appear
//!   in URLs and token scopes). Arg names: letters, digits, `_`, `-`, starting with a letter or `_`.
//! - No two commands of a tool, and no two args of a command, share a name. No two files define the same
//!   tool: the first in name order wins, the second is an error naming both.
//! - `timeout` is required and more than zero; `concurrency` is at least 1; `max_len` is 1 to
//!   [`MAX_MAX_LEN`] (Linux's longest argv element), default [`DEFAULT_MAX_LEN`].
//! - `exec` is not empty; `exec[0]`, the program, is not empty and holds no placeholder; no element holds
//!   a NUL byte.
//! - Placeholders are `{{name}}` or `{{.name}}` (spaces allowed inside the braces) and name a declared
//!   arg. Any other template syntax (`{{if}}`, `{{.x | f}}`, `{{- .x}}`), an unclosed `{{` and a stray
//!   `}}` are refused; there is no escape.
//! - Patterns compile with the `regex` crate (linear time: no catastrophic backtracking), at most
//!   [`MAX_PATTERN_LEN`] bytes and 1 MiB compiled, and are anchored as `^(?:pattern)$`: they match the
//!   whole value whether or not the operator wrote the anchors.
//! - A required arg has no default; a default passes its arg's own checks (pattern, type, length).
//!
//! # Args and substitution
//!
//! See [`CommandSpec::invocation`]. An optional arg with no default may be used in `exec`: when the
//! caller leaves it out, each element that uses it is dropped whole. Values of `secret` args are never
//! logged; [`Invocation::redacted_argv`] shows them as `***`, and listings hide their defaults.

mod file;
mod index;
mod registry;
mod spec;

pub use file::{ToolFileError, DEFAULT_MAX_LEN, MAX_FILE_SIZE, MAX_MAX_LEN, MAX_PATTERN_LEN};
pub use index::{ArgInfo, CommandInfo, ToolIndex, ToolInfo, MAX_FILES};
pub use registry::{ToolRegistry, WatchError, WatchHandle, WatchOptions};
pub use spec::{ArgError, ArgKind, ArgSpec, CommandSpec, Invocation, ToolSpec};

/// Parses one tool file's text as if it were read from `path` (which gives the format by its extension,
/// the default tool name, and the name in errors), without touching the disk. For `corral tools check`
/// and tests.
pub fn parse_tool_file(path: &std::path::Path, text: &str) -> Result<ToolSpec, ToolFileError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let format = file::Format::of(name).ok_or_else(|| {
        ToolFileError::new(
            path,
            "not a tool file name: tool files end in .toml or .json and are not hidden",
        )
    })?;
    file::parse_tool(path, format, text)
}
