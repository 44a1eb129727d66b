//! [`ToolIndex`]: an immutable snapshot of a tools directory.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::file::{read_tool_file, Format, ToolFileError};
use super::spec::{ArgKind, CommandSpec, ToolSpec};

/// At most this many tool files are read from one directory; the others are reported and skipped.
pub const MAX_FILES: usize = 1000;

/// Every tool of a directory at one moment, and every file that was skipped. Immutable: a reload builds
/// a new index and swaps it in whole.
#[derive(Debug, Default)]
pub struct ToolIndex {
    tools: BTreeMap<String, Arc<ToolSpec>>,
    errors: Vec<ToolFileError>,
    generation: u64,
    /// What the directory looked like just before it was read (see [`fingerprint`]).
    fingerprint: u64,
}

/// One tool, for a listing (`GET /tools`). Plain data: the binary maps it to its wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolInfo {
    /// The tool's name.
    pub name: String,
    /// What the tool is for (may be empty).
    pub description: String,
    /// tailkit's `version`, when the file has one.
    pub version: Option<String>,
    /// The file it comes from.
    pub file: PathBuf,
    /// Its commands, in file order.
    pub commands: Vec<CommandInfo>,
}

/// One command, for a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandInfo {
    /// The command's name.
    pub name: String,
    /// What it does (may be empty).
    pub description: String,
    /// Its argv as written, placeholders included.
    pub exec: Vec<String>,
    /// Its args, in file order.
    pub args: Vec<ArgInfo>,
    /// How long one run may take.
    pub timeout: Duration,
    /// At most this many runs at once, if limited.
    pub concurrency: Option<u32>,
    /// The capability a caller needs (tailkit's `acl_cap`), if any.
    pub acl_cap: Option<String>,
}

/// One arg, for a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgInfo {
    /// The arg's name.
    pub name: String,
    /// What it is for (may be empty).
    pub description: String,
    /// Integer, boolean or any text.
    pub kind: ArgKind,
    /// The caller must supply it.
    pub required: bool,
    /// The pattern the whole value must match, as written.
    pub pattern: Option<String>,
    /// The default value; `None` for a secret arg even when it has one (see `has_default`).
    pub default: Option<String>,
    /// The arg has a default (shown or not).
    pub has_default: bool,
    /// Its values are never shown.
    pub secret: bool,
    /// The longest accepted value, in bytes.
    pub max_len: usize,
}

impl ToolIndex {
    /// An index with no tools and no errors (generation 0).
    pub fn empty() -> ToolIndex {
        ToolIndex::default()
    }

    /// Reads every tool file of `dir` (`*.toml` and `*.json`, not hidden files or editor leftovers such as
    /// `.#x.toml`, `x.toml~`, `.x.toml.swp`, `#x.toml#`), in name order. A missing directory gives an empty
    /// index; an unreadable one, an empty index with one error naming it. A bad file is skipped with an
    /// error naming it and the reason; when two files define the same tool, the first in name order wins
    /// and the second is an error naming both. Blocking I/O: from async code, call it through
    /// `spawn_blocking`.
    pub fn load(dir: &Path) -> ToolIndex {
        Self::load_generation(dir, 0)
    }

    pub(crate) fn load_generation(dir: &Path, generation: u64) -> ToolIndex {
        let fingerprint = fingerprint(dir);
        let mut index = ToolIndex {
            generation,
            fingerprint,
            ..ToolIndex::default()
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return index,
            Err(err) => {
                index.errors.push(ToolFileError::new(
                    dir,
                    format!("cannot read the tools directory: {err}"),
                ));
                return index;
            }
        };
        let mut files: Vec<(String, PathBuf, Format)> = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    index.errors.push(ToolFileError::new(
                        dir,
                        format!("cannot list the tools directory: {err}"),
                    ));
                    continue;
                }
            };
            let os_name = entry.file_name();
            let Some(name) = os_name.to_str() else {
                let bytes = os_name.as_bytes();
                if bytes.ends_with(b".toml") || bytes.ends_with(b".json") {
                    index
                        .errors
                        .push(ToolFileError::new(&entry.path(), "the file name is not UTF-8"));
                }
                continue;
            };
            if let Some(format) = Format::of(name) {
                files.push((name.to_owned(), entry.path(), format));
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        if files.len() > MAX_FILES {
            for (_, path, _) in files.drain(MAX_FILES..) {
                index.errors.push(ToolFileError::new(
                    &path,
                    format!("more than {MAX_FILES} tool files: this one is skipped"),
                ));
            }
        }
        for (_, path, format) in files {
            match read_tool_file(&path, format) {
                Ok(tool) => match index.tools.get(&tool.name) {
                    Some(first) => index.errors.push(ToolFileError::new(
                        &path,
                        format!(
                            "tool {:?} is already defined in {}: this file is skipped",
                            tool.name,
                            first.file.display()
                        ),
                    )),
                    None => {
                        index.tools.insert(tool.name.clone(), Arc::new(tool));
                    }
                },
                Err(err) => index.errors.push(err),
            }
        }
        index
    }

    /// The command `cmd` of tool `tool`.
    pub fn lookup(&self, tool: &str, cmd: &str) -> Option<Arc<CommandSpec>> {
        self.tools.get(tool)?.command(cmd).cloned()
    }

    /// One tool by name.
    pub fn tool(&self, name: &str) -> Option<&Arc<ToolSpec>> {
        self.tools.get(name)
    }

    /// Every tool, by name.
    pub fn specs(&self) -> impl Iterator<Item = &Arc<ToolSpec>> {
        self.tools.values()
    }

    /// Every tool as plain data, by name, for `GET /tools`. Secret defaults are left out.
    pub fn tools(&self) -> Vec<ToolInfo> {
        self.tools.values().map(|tool| tool_info(tool)).collect()
    }

    /// The files that were skipped, and why, in file name order (plus the directory itself when it
    /// cannot be read).
    pub fn errors(&self) -> &[ToolFileError] {
        &self.errors
    }

    /// How many tools.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// No tools at all.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// How many commands, across all tools.
    pub fn command_count(&self) -> usize {
        self.tools.values().map(|t| t.commands.len()).sum()
    }

    /// Which load this is: 0 for the first, then one more per reload of its registry.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

fn tool_info(tool: &ToolSpec) -> ToolInfo {
    ToolInfo {
        name: tool.name.clone(),
        description: tool.description.clone(),
        version: tool.version.clone(),
        file: tool.file.clone(),
        commands: tool
            .commands
            .iter()
            .map(|c| CommandInfo {
                name: c.name.clone(),
                description: c.description.clone(),
                exec: c.exec.iter().map(|t| t.raw.clone()).collect(),
                args: c
                    .args
                    .iter()
                    .map(|a| ArgInfo {
                        name: a.name.clone(),
                        description: a.description.clone(),
                        kind: a.kind,
                        required: a.required,
                        pattern: a.pattern.clone(),
                        default: if a.secret { None } else { a.default.clone() },
                        has_default: a.default.is_some(),
                        secret: a.secret,
                        max_len: a.max_len,
                    })
                    .collect(),
                timeout: c.timeout,
                concurrency: c.concurrency,
                acl_cap: c.acl_cap.clone(),
            })
            .collect(),
    }
}

/// What `stat` says of one file: device, inode, mode, size, modification and change times (s, ns).
type FileStamp = (u64, u64, u32, u64, i64, i64, i64, i64);

/// A cheap summary of a tools directory: its identity and, for each tool file, its name, inode, size,
/// and change and modification times. Two equal fingerprints mean that, as far as `stat` can tell,
/// nothing a load would read has changed. Used by the watcher's safety-net poll.
pub(crate) fn fingerprint(dir: &Path) -> u64 {
    let mut hasher = DefaultHasher::new();
    match std::fs::metadata(dir) {
        Ok(meta) => (meta.dev(), meta.ino(), meta.mode(), meta.mtime(), meta.mtime_nsec()).hash(&mut hasher),
        Err(err) => {
            format!("{:?}", err.kind()).hash(&mut hasher);
            return hasher.finish();
        }
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        "unreadable".hash(&mut hasher);
        return hasher.finish();
    };
    let mut files: Vec<(Vec<u8>, Option<FileStamp>)> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_str().is_none_or(|name| Format::of(name).is_some()))
        .map(|entry| {
            let stat = std::fs::metadata(entry.path()).ok().map(|m| {
                (
                    m.dev(),
                    m.ino(),
                    m.mode(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                )
            });
            (entry.file_name().as_bytes().to_vec(), stat)
        })
        .collect();
    files.sort();
    files.hash(&mut hasher);
    hasher.finish()
}
