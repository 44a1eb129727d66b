//! The tool registry: both file formats, bad files, the substitution corpus (with a real process), reloads
//! by the watcher, and atomic swaps under concurrent readers.
//!
//! Tests wait on conditions with generous deadlines and never assert on speed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_core::tools::{
    parse_tool_file, ArgError, ArgKind, ToolIndex, ToolRegistry, WatchOptions, DEFAULT_MAX_LEN, MAX_FILE_SIZE,
};

/// Generous deadline for anything a test waits for.
const DEADLINE: Duration = Duration::from_secs(30);

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("corral-core-tools-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("UNWRAP: create temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) {
    std::fs::write(dir.join(name), text).expect("UNWRAP: write test file");
}

/// Writes `name` the way editors and `tailkit.Install` do: a temporary file, then a rename over it.
fn write_by_rename(dir: &Path, temp: &str, name: &str, text: &str) {
    write(dir, temp, text);
    std::fs::rename(dir.join(temp), dir.join(name)).expect("UNWRAP: rename into place");
}

fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The SPEC's example, plus the optional keys.
const DOCKER_TOML: &str = r#"
name = "docker"
description = "Container operations"

[[command]]
name = "restart"
description = "Restart one container"
exec = ["/usr/bin/docker", "restart", "{{container}}"]
timeout = "30s"
concurrency = 1
acl_cap = "ops"
[[command.arg]]
name = "container"
required = true
pattern = "^[a-zA-Z0-9_.-]+$"
description = "The container's name"

[[command]]
name = "logs"
exec = ["/usr/bin/docker", "logs", "--tail={{tail}}", "{{container}}"]
timeout = "1m"
[[command.arg]]
name = "container"
required = true
pattern = "[a-zA-Z0-9_.-]+"
[[command.arg]]
name = "tail"
default = "100"
pattern = "[0-9]+"
max_len = 6
[[command.arg]]
name = "token"
secret = true
default = "s3cr3t"
"#;

/// A tool file as `tailkit.Install` writes it (`json.MarshalIndent` of `tailkit.Tool`), modelled on
/// devbox-cli's `setup` command, with a second command using more of the format, and fields corral
/// does not know (which must be tolerated).
const DEVBOX_JSON: &str = r#"{
  "name": "devbox",
  "version": "1.4.0",
  "tsnet_host": "devbox",
  "homepage": "https://example.invalid/devbox",
  "commands": [
    {
      "name": "docker-compose-restart",
      "description": "Restart a Docker Compose service by name",
      "acl_cap": "devbox:docker-compose-restart",
      "exec_parts": [
        "/usr/bin/docker",
        "compose",
        "restart",
        "{{.service}}"
      ],
      "timeout": 60000000000,
      "args": [
        {
          "name": "service",
          "type": "string",
          "required": true,
          "pattern": "^[a-zA-Z0-9_-]+$"
        }
      ]
    },
    {
      "name": "scale",
      "description": "",
      "acl_cap": "",
      "exec_parts": ["/usr/bin/docker", "compose", "up", "-d", "--scale", "{{ .service }}={{.replicas}}"],
      "timeout": 1500000000,
      "deprecated": false,
      "args": [
        {"name": "service", "type": "string", "required": true, "pattern": "^[a-zA-Z0-9_-]+$"},
        {"name": "replicas", "type": "int", "required": true, "x-ui": {"widget": "spinner"}},
        {"name": "dry_run", "type": "bool", "required": false}
      ]
    },
    {
      "name": "status",
      "description": "No args at all",
      "acl_cap": "devbox:read",
      "exec_parts": ["/usr/bin/docker", "compose", "ps"],
      "timeout": 5000000000
    }
  ]
}"#;

#[test]
fn both_formats_load() {
    let dir = TempDir::new();
    write(dir.path(), "docker.toml", DOCKER_TOML);
    write(dir.path(), "devbox.json", DEVBOX_JSON);
    let index = ToolIndex::load(dir.path());
    assert!(index.errors().is_empty(), "{:?}", index.errors());
    assert_eq!(index.len(), 2);
    assert_eq!(index.command_count(), 5);

    let restart = index
        .lookup("docker", "restart")
        .expect("UNWRAP: docker/restart is loaded");
    assert_eq!(restart.tool(), "docker");
    assert_eq!(restart.exec(), ["/usr/bin/docker", "restart", "{{container}}"]);
    assert_eq!(restart.program(), "/usr/bin/docker");
    assert_eq!(restart.timeout(), Duration::from_secs(30));
    assert_eq!(restart.concurrency(), Some(1));
    assert_eq!(restart.acl_cap(), Some("ops"));
    assert_eq!(restart.file(), dir.path().join("docker.toml"));
    let container = restart.arg("container").expect("UNWRAP: declared");
    assert!(container.required());
    assert_eq!(container.pattern(), Some("^[a-zA-Z0-9_.-]+$"));
    assert_eq!(container.max_len(), DEFAULT_MAX_LEN);
    assert_eq!(
        restart
            .resolve(&args(&[("container", "web-1")]))
            .expect("UNWRAP: valid"),
        ["/usr/bin/docker", "restart", "web-1"]
    );

    let compose = index
        .lookup("devbox", "docker-compose-restart")
        .expect("UNWRAP: loaded");
    assert_eq!(compose.timeout(), Duration::from_secs(60));
    assert_eq!(compose.acl_cap(), Some("devbox:docker-compose-restart"));
    assert_eq!(
        compose.resolve(&args(&[("service", "api")])).expect("UNWRAP: valid"),
        ["/usr/bin/docker", "compose", "restart", "api"]
    );
    let scale = index.lookup("devbox", "scale").expect("UNWRAP: loaded");
    assert_eq!(scale.timeout(), Duration::from_millis(1500));
    assert_eq!(scale.acl_cap(), None, "an empty acl_cap is none");
    assert_eq!(scale.arg("replicas").map(|a| a.kind()), Some(ArgKind::Int));
    assert_eq!(
        scale
            .resolve(&args(&[("service", "api"), ("replicas", "3")]))
            .expect("UNWRAP: valid"),
        ["/usr/bin/docker", "compose", "up", "-d", "--scale", "api=3"]
    );
    assert_eq!(
        scale.resolve(&args(&[("service", "api"), ("replicas", "3; rm")])),
        Err(ArgError::WrongKind {
            arg: "replicas".into(),
            kind: ArgKind::Int
        })
    );
    assert!(index.lookup("devbox", "status").is_some());
    assert!(index.lookup("devbox", "nope").is_none());
    assert!(index.lookup("nope", "status").is_none());

    let tools = index.tools();
    assert_eq!(
        tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["devbox", "docker"]
    );
    let devbox = &tools[0];
    assert_eq!(devbox.version.as_deref(), Some("1.4.0"));
    assert_eq!(devbox.file, dir.path().join("devbox.json"));
    let docker = &tools[1];
    assert_eq!(docker.description, "Container operations");
    assert_eq!(
        docker.commands.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["restart", "logs"]
    );
    let logs = &docker.commands[1];
    assert_eq!(logs.timeout, Duration::from_secs(60));
    assert_eq!(logs.args.len(), 3);
    assert_eq!(logs.args[1].default.as_deref(), Some("100"));
    assert_eq!(logs.args[1].max_len, 6);
    assert!(logs.args[2].secret && logs.args[2].has_default);
    assert_eq!(logs.args[2].default, None, "a secret default is not listed");
}

#[test]
fn tailkit_files_with_go_zero_values_load() {
    // What Go writes for nil slices and absent optional fields: `"commands": null`, no `args`, no `pattern`.
    let dir = TempDir::new();
    write(
        dir.path(),
        "empty.json",
        r#"{"name": "empty", "version": "", "tsnet_host": "", "commands": null}"#,
    );
    write(
        dir.path(),
        "bare.json",
        r#"{"name": "bare", "version": "0.1.0", "tsnet_host": "bare"}"#,
    );
    write(
        dir.path(),
        "nulls.json",
        r#"{"name": "nulls", "commands": [{"name": "x", "description": "", "acl_cap": "",
            "exec_parts": ["/bin/true"], "timeout": 1000000000, "args": null}]}"#,
    );
    let index = ToolIndex::load(dir.path());
    assert!(index.errors().is_empty(), "{:?}", index.errors());
    assert_eq!(index.len(), 3);
    assert_eq!(index.tool("empty").map(|t| t.commands().len()), Some(0));
    assert_eq!(index.tool("empty").and_then(|t| t.version()), None);
    assert!(index.lookup("nulls", "x").is_some());
}

#[test]
fn the_file_stem_names_a_toml_tool_without_a_name() {
    let tool = parse_tool_file(
        Path::new("/etc/corral/tools.d/backup.toml"),
        "[[command]]\nname = \"run\"\nexec = [\"/usr/bin/restic\", \"backup\"]\ntimeout = \"1h\"\n",
    )
    .expect("UNWRAP: valid");
    assert_eq!(tool.name(), "backup");
    assert_eq!(tool.commands()[0].timeout(), Duration::from_secs(3600));
}

/// A good file, then many bad ones: each bad file is skipped with an error naming it and the reason,
/// and the good one is served.
#[test]
fn bad_files_are_reported_and_skipped() {
    let dir = TempDir::new();
    let d = dir.path();
    write(d, "docker.toml", DOCKER_TOML);
    let cmd = |body: &str| format!("[[command]]\nname = \"c\"\n{body}\n");
    let with_arg = |exec: &str, arg: &str| {
        format!("[[command]]\nname = \"c\"\nexec = {exec}\ntimeout = \"1s\"\n[[command.arg]]\nname = \"x\"\n{arg}\n")
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("syntax.toml", b"name = \"s\"\n[[command]\nname = \"c\"\n".to_vec(), "syntax.toml:2:"),
        ("syntax.json", b"{\n  \"name\": \"s\",\n  \"commands\": [\n}".to_vec(), "syntax.json:4:"),
        ("unknown-key.toml", cmd("exec = [\"/bin/true\"]\ntimeout = \"1s\"\nbogus = 1").into(), "unknown field `bogus`"),
        ("unknown-top.toml", b"nme = \"typo\"\n".to_vec(), "unknown field `nme`"),
        ("no-timeout.toml", cmd("exec = [\"/bin/true\"]").into(), "command \"c\": missing timeout"),
        ("no-timeout.json", br#"{"name": "nt", "commands": [{"name": "c", "exec_parts": ["/bin/true"]}]}"#.to_vec(), "command \"c\": missing timeout"),
        ("zero-timeout.toml", cmd("exec = [\"/bin/true\"]\ntimeout = \"0s\"").into(), "more than zero"),
        ("zero-timeout.json", br#"{"name": "zt", "commands": [{"name": "c", "exec_parts": ["/bin/true"], "timeout": 0}]}"#.to_vec(), "more than zero"),
        ("negative-timeout.json", br#"{"name": "ng", "commands": [{"name": "c", "exec_parts": ["/bin/true"], "timeout": -5}]}"#.to_vec(), "negative"),
        ("bare-timeout.toml", cmd("exec = [\"/bin/true\"]\ntimeout = \"30\"").into(), "no unit"),
        ("int-timeout.toml", cmd("exec = [\"/bin/true\"]\ntimeout = 30").into(), "invalid type"),
        ("dup-command.toml", format!("{}{}", cmd("exec = [\"/bin/true\"]\ntimeout = \"1s\""), cmd("exec = [\"/bin/true\"]\ntimeout = \"1s\"")).into(), "command \"c\" is declared twice"),
        ("dup-arg.toml", format!("{}[[command.arg]]\nname = \"x\"\n", with_arg("[\"/bin/echo\"]", "")).into(), "arg \"x\" is declared twice"),
        ("undeclared.toml", with_arg("[\"/bin/echo\", \"{{y}}\"]", "").into(), "\"{{y}}\" names no declared arg"),
        ("undeclared.json", br#"{"name": "ud", "commands": [{"name": "c", "exec_parts": ["/bin/echo", "{{.y}}"], "timeout": 1}]}"#.to_vec(), "names no declared arg"),
        ("template-if.toml", with_arg("[\"/bin/echo\", \"{{if .x}}a{{end}}\"]", "").into(), "unsupported template syntax"),
        ("template-pipe.json", br#"{"name": "tp", "commands": [{"name": "c", "exec_parts": ["/bin/echo", "{{.x | printf \"%q\"}}"], "timeout": 1, "args": [{"name": "x"}]}]}"#.to_vec(), "unsupported template syntax"),
        ("unclosed.toml", with_arg("[\"/bin/echo\", \"{{x\"]", "").into(), "never closed"),
        ("stray-close.toml", with_arg("[\"/bin/echo\", \"x}}\"]", "").into(), "no \"{{\" before it"),
        ("bad-regex.toml", with_arg("[\"/bin/echo\", \"{{x}}\"]", "pattern = \"([a-z]\"").into(), "does not compile"),
        ("huge-regex.toml", with_arg("[\"/bin/echo\", \"{{x}}\"]", "pattern = '(\\w{200}){200}'").into(), "too complex"),
        ("escaping-regex.toml", with_arg("[\"/bin/echo\", \"{{x}}\"]", "pattern = \"a)|(b\"").into(), "does not compile"),
        ("empty-exec.toml", cmd("exec = []\ntimeout = \"1s\"").into(), "`exec` is missing or empty"),
        ("no-exec.json", br#"{"name": "ne", "commands": [{"name": "c", "timeout": 1}]}"#.to_vec(), "`exec_parts` is missing or empty"),
        ("empty-program.toml", cmd("exec = [\"\", \"x\"]\ntimeout = \"1s\"").into(), "the program, is empty"),
        ("placeholder-program.toml", with_arg("[\"{{x}}\", \"-c\"]", "").into(), "must be fixed"),
        ("placeholder-program.json", br#"{"name": "pp", "commands": [{"name": "c", "exec_parts": ["/usr/bin/{{.x}}"], "timeout": 1, "args": [{"name": "x"}]}]}"#.to_vec(), "must be fixed"),
        ("nul-exec.json", br#"{"name": "nx", "commands": [{"name": "c", "exec_parts": ["/bin/echo", "a\u0000b"], "timeout": 1}]}"#.to_vec(), "NUL"),
        ("required-default.toml", with_arg("[\"/bin/echo\", \"{{x}}\"]", "required = true\ndefault = \"a\"").into(), "is required and has a default"),
        ("bad-default.toml", with_arg("[\"/bin/echo\", \"{{x}}\"]", "pattern = \"[a-z]+\"\ndefault = \"A;B\"").into(), "its default is refused"),
        ("long-default.toml", with_arg("[\"/bin/echo\", \"{{x}}\"]", "max_len = 2\ndefault = \"abc\"").into(), "its default is refused"),
        ("zero-max-len.toml", with_arg("[\"/bin/echo\", \"{{x}}\"]", "max_len = 0").into(), "max_len must be"),
        ("zero-concurrency.toml", cmd("exec = [\"/bin/true\"]\ntimeout = \"1s\"\nconcurrency = 0").into(), "concurrency must be at least 1"),
        ("no-name.json", br#"{"version": "1", "commands": []}"#.to_vec(), "missing tool name"),
        ("no-command-name.toml", b"[[command]]\nexec = [\"/bin/true\"]\ntimeout = \"1s\"\n".to_vec(), "command #1 has no name"),
        ("no-arg-name.toml", format!("{}[[command.arg]]\nrequired = true\n", cmd("exec = [\"/bin/true\"]\ntimeout = \"1s\"")).into(), "arg #1 has no name"),
        ("bad-name.toml", b"name = \"a/b\"\n".to_vec(), "invalid tool name \"a/b\""),
        ("bad-type.json", br#"{"name": "bt", "commands": [{"name": "c", "exec_parts": ["/bin/echo"], "timeout": 1, "args": [{"name": "x", "type": "float"}]}]}"#.to_vec(), "unknown type \"float\""),
        ("not-an-object.json", b"[1, 2, 3]".to_vec(), "invalid type"),
        ("binary.toml", vec![0xff, 0xfe, 0x00, 0x01, 0x80, 0x81, 0xc3, 0x28], "not UTF-8"),
        ("binary.json", (0..=255u8).cycle().take(4096).collect(), "not UTF-8"),
        ("huge.toml", {
            let mut text = b"# ".to_vec();
            text.resize(MAX_FILE_SIZE as usize + 10, b'x');
            text
        }, "too large"),
        // Same tool name as docker.toml, later in name order: the second is refused, naming the first.
        ("zz-docker.toml", b"name = \"docker\"\n".to_vec(), "tool \"docker\" is already defined in"),
    ];
    for (name, text, _) in &cases {
        write(d, name, text);
    }
    std::fs::create_dir(d.join("a-directory.toml")).expect("UNWRAP: mkdir");
    std::os::unix::fs::symlink(d.join("missing-target"), d.join("dangling.toml")).expect("UNWRAP: symlink");
    std::os::unix::fs::symlink(std::env::temp_dir(), d.join("to-a-dir.json")).expect("UNWRAP: symlink");
    // Editor leftovers and hidden files are not tool files, whatever they hold.
    for ignored in [
        ".docker.toml.swp",
        ".#docker.toml",
        "docker.toml~",
        "#docker.toml#",
        "docker.toml.tmp",
        ".hidden.json",
    ] {
        write(d, ignored, [0xff, 0x00, 0x01]);
    }

    let index = ToolIndex::load(d);
    assert_eq!(index.len(), 1, "only docker.toml is good: {:?}", index.errors());
    assert!(index.lookup("docker", "restart").is_some());
    let expected: Vec<(&str, &str)> = cases
        .iter()
        .map(|(name, _, needle)| (*name, *needle))
        .chain([
            ("a-directory.toml", "not a regular file"),
            ("dangling.toml", "cannot read"),
            ("to-a-dir.json", "not a regular file"),
        ])
        .collect();
    for (name, needle) in &expected {
        let error = index
            .errors()
            .iter()
            .find(|e| e.file == d.join(name))
            .unwrap_or_else(|| panic!("no error for {name}: {:?}", index.errors()));
        let shown = error.to_string();
        assert!(shown.starts_with(&d.join(name).display().to_string()), "{shown}");
        assert!(shown.contains(needle), "{name}: expected {needle:?} in {shown:?}");
    }
    assert_eq!(index.errors().len(), expected.len(), "{:#?}", index.errors());
    // The duplicate names both files.
    let dup = index
        .errors()
        .iter()
        .find(|e| e.file == d.join("zz-docker.toml"))
        .expect("UNWRAP: checked above");
    assert!(
        dup.message.contains(&d.join("docker.toml").display().to_string()),
        "{dup}"
    );
    // Syntax errors carry a line.
    let syntax = index
        .errors()
        .iter()
        .find(|e| e.file == d.join("syntax.toml"))
        .expect("UNWRAP: checked above");
    assert_eq!(syntax.line, Some(2));
}

#[test]
fn unreadable_files_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    write(dir.path(), "locked.toml", DOCKER_TOML);
    let path = dir.path().join("locked.toml");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).expect("UNWRAP: chmod");
    if std::fs::read(&path).is_ok() {
        eprintln!("running with CAP_DAC_OVERRIDE (root): permissions are not enforced, nothing to test");
        return;
    }
    let index = ToolIndex::load(dir.path());
    assert!(index.is_empty());
    assert!(
        index.errors()[0].to_string().contains("cannot read"),
        "{:?}",
        index.errors()
    );
}

#[test]
fn a_missing_directory_is_an_empty_registry_and_a_file_is_an_error() {
    let dir = TempDir::new();
    let registry = ToolRegistry::load(dir.path().join("absent"));
    assert!(registry.current().is_empty());
    assert!(registry.current().errors().is_empty());
    assert_eq!(registry.generation(), 0);

    write(dir.path(), "plain", "not a dir");
    let index = ToolIndex::load(&dir.path().join("plain"));
    assert!(index.is_empty());
    assert_eq!(index.errors().len(), 1);
    assert!(
        index.errors()[0].message.contains("cannot read the tools directory"),
        "{:?}",
        index.errors()
    );
}

/// Hostile values, through the real thing: the resolved argv is spawned (`printf '%s\0' ...`, which
/// prints each of its args followed by a NUL) and each value must come back as exactly one argument,
/// unchanged, with no side effect.
#[test]
fn hostile_values_arrive_as_exactly_one_argument() {
    let dir = TempDir::new();
    let tool = parse_tool_file(
        &dir.path().join("echo.toml"),
        r#"
[[command]]
name = "echo"
exec = ["printf", "%s\\0", "{{v}}", "--name={{v}}", "{{other}}"]
timeout = "10s"
[[command.arg]]
name = "v"
[[command.arg]]
name = "other"
default = "OTHER"
"#,
    )
    .expect("UNWRAP: valid");
    let cmd = &tool.commands()[0];
    let max = "m".repeat(DEFAULT_MAX_LEN);
    let corpus: Vec<&str> = vec![
        "; touch X",
        "$(touch X)",
        "`touch X`",
        "&& touch X",
        "|| touch X",
        "| touch X",
        "> X",
        "a\nb",
        "line\n; touch X\n",
        "\r\n",
        "\"double\" 'single' \\\"escaped\\\"",
        "'",
        "\"",
        "a b  c",
        " leading and trailing ",
        "\t",
        "*",
        "?",
        "~",
        "$HOME",
        "${HOME}",
        "-rf",
        "--",
        "-",
        "--name=evil",
        "",
        "héllo wörld 🚀 日本語",
        "\u{202e}rtl",
        "{{other}}",
        "{{.other}}",
        "{{v}}",
        "{{",
        "}}",
        "%s%n%d",
        "\\0",
        "\\",
        &max,
    ];
    for value in corpus {
        let argv = cmd
            .resolve(&args(&[("v", value)]))
            .expect("UNWRAP: no pattern: any value is accepted");
        assert_eq!(
            argv,
            ["printf", "%s\\0", value, &format!("--name={value}"), "OTHER"],
            "{value:?}"
        );
        let output = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(dir.path())
            .output()
            .expect("UNWRAP: printf runs");
        assert!(output.status.success(), "{value:?}: {output:?}");
        let stdout = String::from_utf8(output.stdout).expect("UNWRAP: printf echoes UTF-8");
        let printed: Vec<&str> = stdout.split_terminator('\0').collect();
        assert_eq!(printed, [value, &format!("--name={value}"), "OTHER"], "{value:?}");
    }
    assert!(!dir.path().join("X").exists(), "a value was interpreted by a shell");

    // Refused: over max_len, and NUL bytes.
    let long = "l".repeat(DEFAULT_MAX_LEN + 1);
    assert_eq!(
        cmd.resolve(&args(&[("v", &long)])),
        Err(ArgError::TooLong {
            arg: "v".into(),
            len: DEFAULT_MAX_LEN + 1,
            max_len: DEFAULT_MAX_LEN
        })
    );
    assert_eq!(
        cmd.resolve(&args(&[("v", "a\0b")])),
        Err(ArgError::NulByte { arg: "v".into() })
    );
    // A placeholder inside a value is never substituted, even when the arg it names has a value.
    assert_eq!(
        cmd.resolve(&args(&[("v", "{{other}}"), ("other", "SET")]))
            .expect("UNWRAP: valid"),
        ["printf", "%s\\0", "{{other}}", "--name={{other}}", "SET"]
    );
}

#[test]
fn patterns_must_match_the_whole_value() {
    let tool = parse_tool_file(
        Path::new("/t/p.toml"),
        r#"
[[command]]
name = "c"
exec = ["/bin/echo", "{{name}}", "{{anchored}}"]
timeout = "1s"
[[command.arg]]
name = "name"
required = true
pattern = "[a-z0-9-]+"
[[command.arg]]
name = "anchored"
pattern = "^(web|db)$"
"#,
    )
    .expect("UNWRAP: valid");
    let cmd = &tool.commands()[0];
    for good in ["web", "a-1"] {
        assert!(cmd.resolve(&args(&[("name", good)])).is_ok(), "{good}");
    }
    for bad in [
        "web; touch X",
        "web\n",
        "\nweb",
        "web ",
        " web",
        "WEB",
        "web$(x)",
        ".",
        "",
    ] {
        let result = cmd.resolve(&args(&[("name", bad)]));
        assert!(
            matches!(&result, Err(ArgError::NoMatch { arg, .. }) if arg == "name")
                || matches!(&result, Err(ArgError::Missing { .. }) if bad.is_empty()),
            "{bad:?}: {result:?}"
        );
    }
    for bad in ["webx", "xdb", "web|db", "db\n"] {
        assert!(
            matches!(
                cmd.resolve(&args(&[("name", "a"), ("anchored", bad)])),
                Err(ArgError::NoMatch { .. })
            ),
            "{bad:?}"
        );
    }
    let err = cmd
        .resolve(&args(&[("name", "a"), ("nope", "1"), ("zzz", "2")]))
        .expect_err("unknown");
    assert!(
        matches!(&err, ArgError::Unknown { arg, .. } if arg == "nope"),
        "{err:?}"
    );
    let missing = parse_tool_file(
        Path::new("/t/m.toml"),
        "[[command]]\nname = \"c\"\nexec = [\"/bin/echo\", \"{{a}}\", \"{{b}}\"]\ntimeout = \"1s\"\n\
         [[command.arg]]\nname = \"a\"\nrequired = true\n[[command.arg]]\nname = \"b\"\nrequired = true\n",
    )
    .expect("UNWRAP: valid");
    let err = missing.commands()[0].resolve(&args(&[])).expect_err("missing");
    assert_eq!(
        err,
        ArgError::Missing {
            args: vec!["a".into(), "b".into()]
        }
    );
    assert_eq!(err.to_string(), "missing required args \"a\", \"b\"");
}

// ─── Reloads ────────────────────────────────────────────────────────────────────────────────────────

/// Waits until the registry's current index satisfies `check`.
async fn wait_until(registry: &ToolRegistry, what: &str, check: impl Fn(&ToolIndex) -> bool) -> Arc<ToolIndex> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut rx = registry.subscribe();
    loop {
        rx.borrow_and_update();
        let index = registry.current();
        if check(&index) {
            return index;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("the registry went away while waiting for {what}"),
            Err(_) => panic!("no reload gave {what} within {DEADLINE:?}; current: {index:?}"),
        }
    }
}

fn tool_file(name: &str, description: &str) -> String {
    format!(
        "name = \"{name}\"\ndescription = \"{description}\"\n[[command]]\nname = \"run\"\nexec = [\"/bin/true\"]\ntimeout = \"5s\"\n"
    )
}

fn description(index: &ToolIndex, tool: &str) -> Option<String> {
    index.tool(tool).map(|t| t.description().to_owned())
}

/// Events only: the safety-net poll is off, so these tests prove that inotify events drive the reloads.
fn events_only() -> WatchOptions {
    WatchOptions {
        poll_interval: None,
        ..WatchOptions::default()
    }
}

#[tokio::test]
async fn the_watcher_reloads_on_every_kind_of_change() {
    let base = TempDir::new();
    let dir = base.path().join("tools.d");
    std::fs::create_dir(&dir).expect("UNWRAP: mkdir");
    let registry = Arc::new(ToolRegistry::load(&dir));
    let _watch = registry.watch_with(events_only()).expect("UNWRAP: the watcher starts");

    // Create.
    write(&dir, "a.toml", tool_file("a", "v1"));
    wait_until(&registry, "a created", |i| description(i, "a").as_deref() == Some("v1")).await;
    // Modify in place.
    write(&dir, "a.toml", tool_file("a", "v2"));
    wait_until(&registry, "a modified", |i| {
        description(i, "a").as_deref() == Some("v2")
    })
    .await;
    // Save by rename, as editors and tailkit.Install do.
    write_by_rename(&dir, ".tailkit-tmp-123", "a.toml", &tool_file("a", "v3"));
    wait_until(&registry, "a saved by rename", |i| {
        description(i, "a").as_deref() == Some("v3")
    })
    .await;
    write_by_rename(&dir, "a.toml.swp~", "a.toml", &tool_file("a", "v4"));
    wait_until(&registry, "a saved by rename again", |i| {
        description(i, "a").as_deref() == Some("v4")
    })
    .await;
    // Rename into place from an ignored name.
    write(&dir, "b.toml.tmp", tool_file("b", "v1"));
    std::fs::rename(dir.join("b.toml.tmp"), dir.join("b.toml")).expect("UNWRAP: rename");
    wait_until(&registry, "b renamed into place", |i| i.tool("b").is_some()).await;
    // Rename between tool names.
    std::fs::rename(dir.join("b.toml"), dir.join("c.json.toml")).expect("UNWRAP: rename");
    wait_until(&registry, "b's file renamed", |i| {
        i.tool("b").is_some_and(|t| t.file() == dir.join("c.json.toml"))
    })
    .await;
    // Rename out to an ignored name.
    std::fs::rename(dir.join("c.json.toml"), dir.join("c.json.toml.bak")).expect("UNWRAP: rename");
    wait_until(&registry, "b renamed away", |i| i.tool("b").is_none()).await;
    // A bad file appears: reported; the good one stays.
    write(&dir, "bad.json", "{ nope");
    let index = wait_until(&registry, "bad.json reported", |i| !i.errors().is_empty()).await;
    assert!(index.tool("a").is_some());
    assert!(index.errors()[0].file.ends_with("bad.json"));
    // Fixed.
    write(&dir, "bad.json", r#"{"name": "fixed", "commands": []}"#);
    wait_until(&registry, "bad.json fixed", |i| {
        i.errors().is_empty() && i.tool("fixed").is_some()
    })
    .await;
    // Delete.
    std::fs::remove_file(dir.join("a.toml")).expect("UNWRAP: rm");
    let index = wait_until(&registry, "a deleted", |i| i.tool("a").is_none()).await;
    assert!(index.tool("fixed").is_some());
    assert!(index.generation() > 0);
}

#[tokio::test]
async fn the_watcher_follows_the_directory_being_deleted_and_created() {
    let base = TempDir::new();
    let dir = base.path().join("tools.d");
    // The directory does not exist yet.
    let registry = Arc::new(ToolRegistry::load(&dir));
    assert!(registry.current().is_empty());
    let _watch = registry.watch_with(events_only()).expect("UNWRAP: the watcher starts");

    std::fs::create_dir(&dir).expect("UNWRAP: mkdir");
    write(&dir, "a.toml", tool_file("a", "first"));
    wait_until(&registry, "a in the new directory", |i| i.tool("a").is_some()).await;

    // Deleted: the index becomes empty.
    std::fs::remove_dir_all(&dir).expect("UNWRAP: rm -r");
    wait_until(&registry, "the directory gone", |i| i.is_empty()).await;

    // Created again (possibly with the same inode number): watched again.
    std::fs::create_dir(&dir).expect("UNWRAP: mkdir");
    write(&dir, "a.toml", tool_file("a", "second"));
    wait_until(&registry, "a in the re-created directory", |i| {
        description(i, "a").as_deref() == Some("second")
    })
    .await;
    write(&dir, "a.toml", tool_file("a", "third"));
    wait_until(&registry, "a modified in the re-created directory", |i| {
        description(i, "a").as_deref() == Some("third")
    })
    .await;

    // Replaced by a rename of another directory.
    let staged = base.path().join("tools.new");
    std::fs::create_dir(&staged).expect("UNWRAP: mkdir");
    write(&staged, "z.toml", tool_file("z", "staged"));
    std::fs::remove_dir_all(&dir).expect("UNWRAP: rm -r");
    std::fs::rename(&staged, &dir).expect("UNWRAP: rename the directory");
    wait_until(&registry, "the replacement directory", |i| {
        i.tool("z").is_some() && i.tool("a").is_none()
    })
    .await;
    write(&dir, "y.toml", tool_file("y", "late"));
    wait_until(&registry, "a file in the replacement directory", |i| {
        i.tool("y").is_some()
    })
    .await;

    // Even the parent may come and go.
    std::fs::remove_dir_all(base.path()).expect("UNWRAP: rm -r");
    wait_until(&registry, "the parent gone", |i| i.is_empty()).await;
    std::fs::create_dir_all(&dir).expect("UNWRAP: mkdir -p");
    write(&dir, "p.toml", tool_file("p", "back"));
    wait_until(&registry, "a file after the parent came back", |i| {
        i.tool("p").is_some()
    })
    .await;
}

#[tokio::test]
async fn the_poll_alone_reloads() {
    // Events off: only the fingerprint poll can notice changes (as on a network file system).
    let dir = TempDir::new();
    write(dir.path(), "a.toml", tool_file("a", "v1"));
    let registry = Arc::new(ToolRegistry::load(dir.path()));
    let _watch = registry
        .watch_with(WatchOptions {
            poll_interval: Some(Duration::from_millis(50)),
            events: false,
            ..WatchOptions::default()
        })
        .expect("UNWRAP: the watcher starts");
    assert_eq!(registry.generation(), 1, "watch reloads once before returning");
    write(dir.path(), "a.toml", tool_file("a", "v2"));
    wait_until(&registry, "a modified", |i| {
        description(i, "a").as_deref() == Some("v2")
    })
    .await;
    write(dir.path(), "b.json", r#"{"name": "b", "commands": []}"#);
    wait_until(&registry, "b created", |i| i.tool("b").is_some()).await;
    std::fs::remove_file(dir.path().join("a.toml")).expect("UNWRAP: rm");
    wait_until(&registry, "a deleted", |i| i.tool("a").is_none()).await;
}

#[tokio::test]
async fn reload_and_generations() {
    let dir = TempDir::new();
    let registry = ToolRegistry::load(dir.path());
    assert_eq!(registry.generation(), 0);
    let mut rx = registry.subscribe();
    write(dir.path(), "a.toml", tool_file("a", "v1"));
    let index = registry.reload();
    assert_eq!(index.generation(), 1);
    assert!(index.tool("a").is_some());
    assert_eq!(*rx.borrow_and_update(), 1);
    let waited = registry.wait_for_generation(1).await;
    assert!(Arc::ptr_eq(&waited, &index));
    // An index taken before a reload stays whole and usable.
    let old = registry.current();
    std::fs::remove_file(dir.path().join("a.toml")).expect("UNWRAP: rm");
    assert!(registry.reload().is_empty());
    assert!(old.lookup("a", "run").is_some());
    assert_eq!(registry.generation(), 2);
}

/// Readers running during reloads see whole indexes only: the writer rewrites all files between
/// reloads, so each index must hold all tools at one version, with lookups agreeing with the listing.
#[test]
fn concurrent_readers_never_see_a_partial_index() {
    const TOOLS: usize = 20;
    const ROUNDS: usize = 60;
    let dir = TempDir::new();
    let write_round = |round: usize| {
        for t in 0..TOOLS {
            write(
                dir.path(),
                &format!("t{t:02}.toml"),
                tool_file(&format!("t{t:02}"), &format!("round-{round}")),
            );
        }
    };
    write_round(0);
    let registry = Arc::new(ToolRegistry::load(dir.path()));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let registry = Arc::clone(&registry);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut last_generation = 0;
                let mut seen = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let index = registry.current();
                    assert!(index.generation() >= last_generation, "generations go forward");
                    last_generation = index.generation();
                    let listing = index.tools();
                    assert_eq!(listing.len(), TOOLS, "a partial index");
                    let version = &listing[0].description;
                    for tool in &listing {
                        assert_eq!(&tool.description, version, "an index mixing two loads");
                        assert!(index.lookup(&tool.name, "run").is_some());
                    }
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    let started = Instant::now();
    for round in 1..=ROUNDS {
        write_round(round);
        let index = registry.reload();
        assert_eq!(index.generation(), round as u64);
        assert!(started.elapsed() < Duration::from_secs(600), "runaway test");
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        assert!(reader.join().expect("UNWRAP: a reader panicked") > 0);
    }
    assert_eq!(
        description(&registry.current(), "t00").as_deref(),
        Some(format!("round-{ROUNDS}").as_str())
    );
}

#[tokio::test]
async fn concurrent_readers_during_watched_reloads() {
    // The same through the watcher: files are written with a rename each, so every index is whole
    // whatever moment the watcher reloads; readers check lookups agree with listings.
    let dir = TempDir::new();
    let registry = Arc::new(ToolRegistry::load(dir.path()));
    let _watch = registry.watch_with(events_only()).expect("UNWRAP: the watcher starts");
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let registry = Arc::clone(&registry);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let index = registry.current();
                for tool in index.tools() {
                    for command in &tool.commands {
                        assert!(index.lookup(&tool.name, &command.name).is_some());
                    }
                }
            }
        })
    };
    for i in 0..30 {
        write_by_rename(
            dir.path(),
            ".tmp",
            &format!("t{i}.toml"),
            &tool_file(&format!("t{i}"), "x"),
        );
    }
    wait_until(&registry, "all 30 tools", |i| i.len() == 30).await;
    done.store(true, Ordering::SeqCst);
    reader.join().expect("UNWRAP: the reader panicked");
}
