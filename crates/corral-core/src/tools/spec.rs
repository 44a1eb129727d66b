//! Validated tool specs, and the runner's core: checking a caller's args and substituting them into argv.
//!
//! Everything here is pure: no I/O, no logging. A [`CommandSpec`] can only be built by the file loader
//! (`super::file`), which has already checked every invariant the functions below rely on: each
//! placeholder names a declared arg, `exec[0]` holds none, every default passes its own checks, patterns
//! compile.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

/// What a caller's value must look like, beyond its pattern: tailkit's `args[].type`.
///
/// corral TOML files have no `type` key: their args are [`ArgKind::String`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArgKind {
    /// Any text (`"string"`, or no type at all).
    String,
    /// A decimal integer that fits in 64 bits, optionally signed: `-3`, `42` (`"int"` or `"integer"`).
    Int,
    /// What Go's `strconv.ParseBool` accepts: `1 t T TRUE true True 0 f F FALSE false False` (`"bool"` or
    /// `"boolean"`).
    Bool,
}

impl ArgKind {
    /// The name as tailkit writes it: `string`, `int`, `bool`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArgKind::String => "string",
            ArgKind::Int => "int",
            ArgKind::Bool => "bool",
        }
    }

    /// Reads a tailkit `type`; the empty string means [`ArgKind::String`].
    pub(crate) fn parse(text: &str) -> Option<ArgKind> {
        match text {
            "" | "string" => Some(ArgKind::String),
            "int" | "integer" => Some(ArgKind::Int),
            "bool" | "boolean" => Some(ArgKind::Bool),
            _ => None,
        }
    }

    fn accepts(self, value: &str) -> bool {
        match self {
            ArgKind::String => true,
            ArgKind::Int => {
                let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && value.parse::<i64>().is_ok()
            }
            ArgKind::Bool => matches!(
                value,
                "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false" | "False"
            ),
        }
    }
}

impl fmt::Display for ArgKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One declared parameter of a command.
#[derive(Clone)]
pub struct ArgSpec {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) kind: ArgKind,
    pub(crate) required: bool,
    /// The pattern as the operator wrote it (for listings and messages).
    pub(crate) pattern: Option<String>,
    /// The same pattern anchored as `^(?:pattern)$`: it must match the whole value.
    pub(crate) regex: Option<Regex>,
    pub(crate) default: Option<String>,
    pub(crate) secret: bool,
    pub(crate) max_len: usize,
}

impl ArgSpec {
    /// The name, as used in placeholders and in the caller's JSON object.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the arg is for (may be empty).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Integer, boolean or any text.
    pub fn kind(&self) -> ArgKind {
        self.kind
    }

    /// The caller must supply it (a required arg never has a default).
    pub fn required(&self) -> bool {
        self.required
    }

    /// The pattern as written in the file; the value must match it as a whole.
    pub fn pattern(&self) -> Option<&str> {
        self.pattern.as_deref()
    }

    /// The value used when the caller leaves this optional arg out.
    ///
    /// This is the real value even for a secret arg: do not log it; listings hide it (see
    /// [`super::ArgInfo::default`]).
    pub fn default_value(&self) -> Option<&str> {
        self.default.as_deref()
    }

    /// The value is never logged, listed or stored in the clear: it shows as `***`.
    pub fn secret(&self) -> bool {
        self.secret
    }

    /// The longest accepted value, in bytes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Checks one value: length, NUL bytes, kind, pattern. The value never appears in the error.
    pub(crate) fn check(&self, value: &str) -> Result<(), ArgError> {
        if value.len() > self.max_len {
            return Err(ArgError::TooLong {
                arg: self.name.clone(),
                len: value.len(),
                max_len: self.max_len,
            });
        }
        if value.contains('\0') {
            return Err(ArgError::NulByte { arg: self.name.clone() });
        }
        if !self.kind.accepts(value) {
            return Err(ArgError::WrongKind {
                arg: self.name.clone(),
                kind: self.kind,
            });
        }
        if let Some(regex) = &self.regex {
            if !regex.is_match(value) {
                return Err(ArgError::NoMatch {
                    arg: self.name.clone(),
                    pattern: self.pattern.clone().unwrap_or_default(),
                });
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ArgSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default = match (&self.default, self.secret) {
            (Some(_), true) => Some("***"),
            (default, _) => default.as_deref(),
        };
        f.debug_struct("ArgSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("required", &self.required)
            .field("pattern", &self.pattern)
            .field("default", &default)
            .field("secret", &self.secret)
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

/// One piece of an `exec` element: literal text, or the value of the arg at this index of
/// [`CommandSpec::args`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(String),
    Arg(usize),
}

/// One `exec` element, parsed once at load time.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub(crate) raw: String,
    pub(crate) segments: Vec<Segment>,
}

impl Template {
    /// The element with each placeholder filled by `value(index)`; `None` if a placeholder's arg has no
    /// value (an optional arg left out, with no default): the element is then dropped from argv.
    fn render<'a>(&self, value: impl Fn(usize) -> Option<&'a str>) -> Option<String> {
        let mut out = String::with_capacity(self.raw.len());
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Arg(index) => out.push_str(value(*index)?),
            }
        }
        Some(out)
    }
}

/// Linux's limit on one argv element, its terminating NUL included (`MAX_ARG_STRLEN`, 32 pages of 4 KiB).
pub(crate) const MAX_ARG_STRLEN: usize = 128 * 1024;

/// Bytes the arg values fill in one rendered element (the rest is the template's literal text).
fn template_args_len(template: &Template, values: &[Option<&str>]) -> usize {
    template
        .segments
        .iter()
        .map(|segment| match segment {
            Segment::Arg(index) => values.get(*index).copied().flatten().map_or(0, str::len),
            Segment::Literal(_) => 0,
        })
        .sum()
}

/// One runnable command of a tool, validated.
#[derive(Debug)]
pub struct CommandSpec {
    pub(crate) tool: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) exec: Vec<Template>,
    pub(crate) timeout: Duration,
    pub(crate) concurrency: Option<u32>,
    pub(crate) acl_cap: Option<String>,
    pub(crate) args: Vec<ArgSpec>,
    pub(crate) file: PathBuf,
}

impl CommandSpec {
    /// The tool this command belongs to.
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// The command's name within its tool.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the command does (may be empty).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The argv as written in the file, placeholders included (`exec` in TOML, `exec_parts` in JSON).
    pub fn exec(&self) -> Vec<&str> {
        self.exec.iter().map(|t| t.raw.as_str()).collect()
    }

    /// The program: `exec[0]`, which never holds a placeholder.
    pub fn program(&self) -> &str {
        self.exec.first().map(|t| t.raw.as_str()).unwrap_or_default()
    }

    /// How long one run may take before it is stopped. Never zero.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// At most this many runs of this command at once (more wait); `None`: no limit.
    pub fn concurrency(&self) -> Option<u32> {
        self.concurrency
    }

    /// The capability a caller needs (tailkit's `acl_cap`), if any. The registry only carries it: the
    /// daemon must check it.
    pub fn acl_cap(&self) -> Option<&str> {
        self.acl_cap.as_deref()
    }

    /// The declared args, in file order.
    pub fn args(&self) -> &[ArgSpec] {
        &self.args
    }

    /// One declared arg by name.
    pub fn arg(&self, name: &str) -> Option<&ArgSpec> {
        self.args.iter().find(|a| a.name == name)
    }

    /// The file this command was loaded from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Checks the caller's args and returns argv, ready to spawn: see [`CommandSpec::invocation`].
    pub fn resolve(&self, args: &BTreeMap<String, String>) -> Result<Vec<String>, ArgError> {
        self.invocation(args).map(|invocation| invocation.argv)
    }

    /// Checks the caller's args, applies defaults and substitutes them into argv.
    ///
    /// Checks, in this order: every supplied name is declared ([`ArgError::Unknown`]); every required
    /// arg is supplied and not empty ([`ArgError::Missing`], naming all of them); then each supplied
    /// value, in declaration order: at most `max_len` bytes, no NUL byte, of its kind, and matching its
    /// pattern over the whole value.
    ///
    /// Substitution works per argv element, on the elements as parsed at load time: a placeholder fills
    /// exactly its place in its own element (`--name={{name}}` stays one element), an arg used in several
    /// elements fills each, and values are never joined, split, trimmed, re-scanned for placeholders or
    /// otherwise interpreted. An element that uses an optional arg that was left out and has no default is
    /// dropped whole (write `--name={{name}}` as one element to make a flag optional; `["--name",
    /// "{{name}}"]` would leave `--name` behind). An optional arg supplied as `""` is a value: the empty
    /// string, if its pattern accepts it.
    pub fn invocation(&self, args: &BTreeMap<String, String>) -> Result<Invocation, ArgError> {
        if let Some(unknown) = args.keys().find(|name| self.arg(name).is_none()) {
            return Err(ArgError::Unknown {
                arg: shorten(unknown),
                declared: self.args.iter().map(|a| a.name.clone()).collect(),
            });
        }
        let missing: Vec<String> = self
            .args
            .iter()
            .filter(|a| a.required && args.get(&a.name).is_none_or(|v| v.is_empty()))
            .map(|a| a.name.clone())
            .collect();
        if !missing.is_empty() {
            return Err(ArgError::Missing { args: missing });
        }
        let mut values: Vec<Option<&str>> = Vec::with_capacity(self.args.len());
        for spec in &self.args {
            match args.get(&spec.name) {
                Some(value) => {
                    spec.check(value)?;
                    values.push(Some(value));
                }
                None => values.push(spec.default.as_deref()),
            }
        }
        let masked: Vec<Option<&str>> = self
            .args
            .iter()
            .zip(&values)
            .map(|(spec, value)| if spec.secret { value.map(|_| "***") } else { *value })
            .collect();
        let mut argv = Vec::with_capacity(self.exec.len());
        let mut redacted_argv = Vec::with_capacity(self.exec.len());
        for template in &self.exec {
            if let Some(element) = template.render(|i| values.get(i).copied().flatten()) {
                // Linux refuses an argv element of MAX_ARG_STRLEN bytes or more (its NUL included) when the
                // program starts: refused here instead, naming the arg, so that no job fails for it later.
                if element.len() >= MAX_ARG_STRLEN {
                    let arg = template.segments.iter().find_map(|segment| match segment {
                        Segment::Arg(index) => self.args.get(*index).map(|a| a.name.clone()),
                        Segment::Literal(_) => None,
                    });
                    return Err(ArgError::TooLong {
                        arg: arg.unwrap_or_default(),
                        len: element.len(),
                        max_len: MAX_ARG_STRLEN - 1 - (element.len() - template_args_len(template, &values)),
                    });
                }
                argv.push(element);
                redacted_argv.push(
                    template
                        .render(|i| masked.get(i).copied().flatten())
                        .unwrap_or_default(),
                );
            }
        }
        let mut effective = BTreeMap::new();
        let mut redacted_args = BTreeMap::new();
        for (spec, (value, shown)) in self.args.iter().zip(values.iter().zip(&masked)) {
            if let (Some(value), Some(shown)) = (value, shown) {
                effective.insert(spec.name.clone(), (*value).to_owned());
                redacted_args.insert(spec.name.clone(), (*shown).to_owned());
            }
        }
        Ok(Invocation {
            argv,
            redacted_argv,
            args: effective,
            redacted_args,
        })
    }
}

/// A checked call of a command: what to spawn, and what may be shown.
///
/// Its `Debug` shows only the redacted fields.
#[derive(Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The argv to spawn: `argv[0]` is the program, each element exactly one argument.
    pub argv: Vec<String>,
    /// The same argv with every secret arg's value replaced by `***`, for logs and records.
    pub redacted_argv: Vec<String>,
    /// The effective args: what the caller gave, plus defaults of the args left out.
    pub args: BTreeMap<String, String>,
    /// The same with secret values replaced by `***`.
    pub redacted_args: BTreeMap<String, String>,
}

impl fmt::Debug for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invocation")
            .field("argv", &self.redacted_argv)
            .field("args", &self.redacted_args)
            .finish_non_exhaustive()
    }
}

/// Why a caller's args were refused (an HTTP 400). Each variant names the arg; none holds its value,
/// so the message can be shown and logged even for secret args.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// The caller supplied an arg the command does not declare.
    #[error("unknown arg {arg:?}: {}", takes(declared))]
    Unknown {
        /// The name as the caller sent it (cut to 100 characters).
        arg: String,
        /// The args the command declares.
        declared: Vec<String>,
    },
    /// Required args missing (or empty).
    #[error("missing required arg{} {}", if args.len() == 1 { "" } else { "s" }, quoted(args))]
    Missing {
        /// Every missing required arg, in declaration order.
        args: Vec<String>,
    },
    /// The value holds a NUL byte, which no argv element can carry.
    #[error("arg {arg:?} contains a NUL byte")]
    NulByte {
        /// The arg's name.
        arg: String,
    },
    /// The value is longer than the arg's `max_len`.
    #[error("arg {arg:?} is too long: {len} bytes, at most {max_len}")]
    TooLong {
        /// The arg's name.
        arg: String,
        /// The value's length in bytes.
        len: usize,
        /// The limit.
        max_len: usize,
    },
    /// The value is not an integer or boolean as the arg's type requires.
    #[error("arg {arg:?} must be {}", match kind { ArgKind::Int => "an integer", ArgKind::Bool => "a boolean (true or false)", ArgKind::String => "a string" })]
    WrongKind {
        /// The arg's name.
        arg: String,
        /// The type it must have.
        kind: ArgKind,
    },
    /// The value does not match the arg's pattern as a whole.
    #[error("arg {arg:?} does not match the pattern {pattern}")]
    NoMatch {
        /// The arg's name.
        arg: String,
        /// The pattern as written in the tool file.
        pattern: String,
    },
}

impl ArgError {
    /// The offending arg (the first one for [`ArgError::Missing`]).
    pub fn arg(&self) -> &str {
        match self {
            ArgError::Missing { args } => args.first().map(String::as_str).unwrap_or_default(),
            ArgError::Unknown { arg, .. }
            | ArgError::NulByte { arg }
            | ArgError::TooLong { arg, .. }
            | ArgError::WrongKind { arg, .. }
            | ArgError::NoMatch { arg, .. } => arg,
        }
    }
}

fn takes(declared: &[String]) -> String {
    if declared.is_empty() {
        "this command takes no args".to_owned()
    } else {
        format!("this command takes {}", quoted(declared))
    }
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// A caller-supplied name, cut so that an error message stays short.
fn shorten(name: &str) -> String {
    const MAX: usize = 100;
    match name.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &name[..cut]),
        None => name.to_owned(),
    }
}

/// One tool: a named set of commands from one file.
#[derive(Debug)]
pub struct ToolSpec {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) version: Option<String>,
    pub(crate) file: PathBuf,
    pub(crate) commands: Vec<Arc<CommandSpec>>,
}

impl ToolSpec {
    /// The tool's name (unique across the directory).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the tool is for (may be empty).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// tailkit's `version`, if the file has one.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The file it was loaded from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Its commands, in file order.
    pub fn commands(&self) -> &[Arc<CommandSpec>] {
        &self.commands
    }

    /// One command by name.
    pub fn command(&self, name: &str) -> Option<&Arc<CommandSpec>> {
        self.commands.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::tools::{parse_tool_file, DEFAULT_MAX_LEN};

    fn command(toml: &str) -> Arc<CommandSpec> {
        let tool = parse_tool_file(Path::new("/t/test.toml"), toml).expect("UNWRAP: the test tool file is valid");
        Arc::clone(tool.commands().first().expect("UNWRAP: the test tool has a command"))
    }

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const FLAGS: &str = r#"
[[command]]
name = "run"
exec = ["/bin/prog", "{{name}}", "--tag={{tag}}", "{{tag}}", "x{{name}}y{{name}}z", "--level", "{{level}}"]
timeout = "5s"
[[command.arg]]
name = "name"
required = true
pattern = "[a-z]+"
[[command.arg]]
name = "tag"
[[command.arg]]
name = "level"
default = "info"
pattern = "info|debug"
"#;

    #[test]
    fn substitutes_each_element_on_its_own() {
        let cmd = command(FLAGS);
        assert_eq!(
            cmd.resolve(&args(&[("name", "web"), ("tag", "a b")]))
                .expect("UNWRAP: valid args"),
            ["/bin/prog", "web", "--tag=a b", "a b", "xwebywebz", "--level", "info"]
        );
    }

    #[test]
    fn an_absent_optional_arg_drops_the_elements_that_use_it() {
        let cmd = command(FLAGS);
        assert_eq!(
            cmd.resolve(&args(&[("name", "web")])).expect("UNWRAP: valid args"),
            ["/bin/prog", "web", "xwebywebz", "--level", "info"]
        );
        // An empty value is a value.
        assert_eq!(
            cmd.resolve(&args(&[("name", "web"), ("tag", "")]))
                .expect("UNWRAP: valid args"),
            ["/bin/prog", "web", "--tag=", "", "xwebywebz", "--level", "info"]
        );
    }

    #[test]
    fn an_element_the_kernel_would_refuse_is_refused_naming_its_arg() {
        // max_len may be 131071 (MAX_ARG_STRLEN less the NUL), but text around the placeholder makes the
        // element longer: such a value used to be accepted, and the job then failed to start (E2BIG).
        let cmd = command(
            "[[command]]\nname = \"big\"\nexec = [\"/bin/prog\", \"{{a}}\", \"--x={{a}}\"]\ntimeout = \"5s\"\n\
             [[command.arg]]\nname = \"a\"\nmax_len = 131071\n",
        );
        let fits = "a".repeat(MAX_ARG_STRLEN - 1 - "--x=".len());
        assert!(cmd.resolve(&args(&[("a", &fits)])).is_ok());
        let long = "a".repeat(MAX_ARG_STRLEN - "--x=".len());
        assert_eq!(
            cmd.resolve(&args(&[("a", &long)])),
            Err(ArgError::TooLong {
                arg: "a".into(),
                len: MAX_ARG_STRLEN,
                max_len: MAX_ARG_STRLEN - 1 - "--x=".len(),
            })
        );
        assert!(parse_tool_file(
            Path::new("/t/test.toml"),
            "[[command]]\nname = \"c\"\nexec = [\"/bin/prog\", \"{{a}}\"]\ntimeout = \"5s\"\n[[command.arg]]\nname = \"a\"\nmax_len = 131072\n"
        )
        .is_err(), "a max_len the kernel cannot take is refused at load");
    }

    #[test]
    fn refusals_name_the_arg() {
        let cmd = command(FLAGS);
        let err = cmd
            .resolve(&args(&[("name", "web"), ("bogus", "1")]))
            .expect_err("unknown");
        assert_eq!(err.arg(), "bogus");
        assert!(
            err.to_string().contains("\"bogus\"") && err.to_string().contains("\"name\""),
            "{err}"
        );
        assert_eq!(
            cmd.resolve(&args(&[])).expect_err("missing"),
            ArgError::Missing {
                args: vec!["name".into()]
            }
        );
        assert!(matches!(
            cmd.resolve(&args(&[("name", "")])),
            Err(ArgError::Missing { .. })
        ));
        let err = cmd.resolve(&args(&[("name", "web;ls")])).expect_err("no match");
        assert_eq!(
            err,
            ArgError::NoMatch {
                arg: "name".into(),
                pattern: "[a-z]+".into()
            }
        );
        assert!(matches!(
            cmd.resolve(&args(&[("name", "web"), ("level", "infox")])),
            Err(ArgError::NoMatch { .. })
        ));
        let err = cmd
            .resolve(&args(&[("name", "web"), ("tag", "a\0b")]))
            .expect_err("nul");
        assert_eq!(err, ArgError::NulByte { arg: "tag".into() });
        let long = "a".repeat(DEFAULT_MAX_LEN + 1);
        let err = cmd.resolve(&args(&[("name", &long)])).expect_err("long");
        assert_eq!(
            err,
            ArgError::TooLong {
                arg: "name".into(),
                len: DEFAULT_MAX_LEN + 1,
                max_len: DEFAULT_MAX_LEN
            }
        );
        assert!(cmd.resolve(&args(&[("name", &"a".repeat(DEFAULT_MAX_LEN))])).is_ok());
    }

    #[test]
    fn secrets_are_masked_in_the_redacted_views_and_debug() {
        let cmd = command(
            r#"
[[command]]
name = "login"
exec = ["/bin/login", "--user={{user}}", "--password={{password}}", "{{password}}"]
timeout = "5s"
[[command.arg]]
name = "user"
required = true
[[command.arg]]
name = "password"
secret = true
default = "hunter2"
"#,
        );
        let invocation = cmd.invocation(&args(&[("user", "bob")])).expect("UNWRAP: valid args");
        assert_eq!(
            invocation.argv,
            ["/bin/login", "--user=bob", "--password=hunter2", "hunter2"]
        );
        assert_eq!(
            invocation.redacted_argv,
            ["/bin/login", "--user=bob", "--password=***", "***"]
        );
        assert_eq!(invocation.redacted_args, args(&[("user", "bob"), ("password", "***")]));
        assert_eq!(invocation.args, args(&[("user", "bob"), ("password", "hunter2")]));
        let shown = format!("{invocation:?} {cmd:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let err = cmd
            .resolve(&args(&[("user", "bob"), ("password", "x\0")]))
            .expect_err("nul");
        assert!(!err.to_string().contains('x'), "{err}");
    }

    #[test]
    fn kinds_check_values() {
        assert!(ArgKind::Int.accepts("42") && ArgKind::Int.accepts("-7") && ArgKind::Int.accepts("+7"));
        assert!(!ArgKind::Int.accepts("") && !ArgKind::Int.accepts("4 2") && !ArgKind::Int.accepts("0x1"));
        assert!(!ArgKind::Int.accepts("99999999999999999999") && !ArgKind::Int.accepts("-"));
        assert!(ArgKind::Bool.accepts("true") && ArgKind::Bool.accepts("0") && !ArgKind::Bool.accepts("yes"));
        assert!(ArgKind::String.accepts(""));
    }

    #[test]
    fn unknown_names_are_cut_in_errors() {
        let cmd = command(FLAGS);
        let name = "x".repeat(10_000);
        let err = cmd.resolve(&args(&[(&name, "1")])).expect_err("unknown");
        assert!(err.to_string().len() < 300, "{err}");
    }
}
