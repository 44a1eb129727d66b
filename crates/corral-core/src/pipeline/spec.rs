//! What a pipeline file says ([`PipelineSpec`], [`StepSpec`]), and checking it ([`Pipeline`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the steps of a pipeline are scheduled. All three are one scheduler with different settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A step starts as soon as every step it runs `after` is done, within the parallelism cap (the
    /// default). No waves: one slow step holds back only the steps that wait for it.
    #[default]
    Dag,
    /// One step at a time, in declaration order (a step declared before one of its `after` steps waits
    /// for it); the first failure of a required step skips every step not yet started.
    Sequential,
    /// The same as [`Mode::Dag`]: everything whose `after` steps are done runs at once, within the cap.
    /// Kept for users of go-process's `RunParallel`; `after` is still honoured.
    Parallel,
}

impl Mode {
    /// Lower-case name, as written in files: `dag`, `sequential`, `parallel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dag => "dag",
            Mode::Sequential => "sequential",
            Mode::Parallel => "parallel",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pipeline as written in a file or a request body: steps and how to schedule them.
///
/// In TOML each step is a `[[step]]` table (`steps` is accepted too, and is what JSON output uses).
/// Unknown keys are refused, so a typo such as `aftr` is an error rather than silently ignored.
///
/// ```toml
/// name = "release"          # optional
/// mode = "dag"              # dag (default) | sequential | parallel
/// parallelism = 4           # optional cap on steps running at once; no cap by default
///
/// [[step]]
/// name = "build"
/// command = ["cargo", "build"]
/// after = ["fetch"]
/// allow_failure = false
/// timeout = "10m"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// A name for messages and events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How steps are scheduled.
    #[serde(default)]
    pub mode: Mode,
    /// At most this many steps run at once; `None` means no limit. `Some(0)` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<usize>,
    /// The steps, in declaration order (which breaks ties when several steps could start).
    #[serde(default, rename(serialize = "steps", deserialize = "step"), alias = "steps")]
    pub steps: Vec<StepSpec>,
}

/// One step: a command and what it waits for.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique within the pipeline; `after` refers to it.
    pub name: String,
    /// The argv: program, then arguments. Never a shell: to use one, write `["sh", "-c", "..."]`.
    pub command: Vec<String>,
    /// Steps that must be done before this one starts. A step that failed with `allow_failure` counts
    /// as done; one that failed otherwise, or was skipped, makes this step skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// When true, this step's failure neither fails the pipeline nor skips the steps after it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_failure: bool,
    /// A wall-clock limit, such as `"10m"`: once it passes, the step's process tree is stopped
    /// gracefully and the step fails as timed out.
    #[serde(
        default,
        with = "crate::units::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The working directory; relative paths in a file are resolved against the file's folder by
    /// [`PipelineSpec::load`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Extra environment variables, on top of the runner's own environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl fmt::Debug for StepSpec {
    // Environment values may hold secrets: show names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepSpec")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("after", &self.after)
            .field("allow_failure", &self.allow_failure)
            .field("timeout", &self.timeout)
            .field("dir", &self.dir)
            .field("env_names", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl StepSpec {
    /// A step running `command`, with no dependencies and default settings.
    pub fn new<I, S>(name: impl Into<String>, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StepSpec {
            name: name.into(),
            command: command.into_iter().map(Into::into).collect(),
            ..StepSpec::default()
        }
    }

    /// Adds steps this one runs after.
    pub fn after<I, S>(mut self, steps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.after.extend(steps.into_iter().map(Into::into));
        self
    }

    /// Lets this step fail without failing the pipeline or skipping its dependents.
    pub fn allow_failure(mut self) -> Self {
        self.allow_failure = true;
        self
    }

    /// Sets a timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the working directory.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }
}

/// A pipeline file or body that could not be read or parsed. (A parsed spec that makes no sense is a
/// [`ValidationError`].)
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read pipeline file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, or not a pipeline: a wrong type, an unknown key. The message names the
    /// line and the key and quotes the line.
    #[error("invalid pipeline TOML: {message}")]
    Toml {
        /// The 1-based line of the problem, when known.
        line: Option<usize>,
        /// The parser's message (multi-line: it quotes the offending line).
        message: String,
    },
    /// The text is not valid JSON, or not a pipeline.
    #[error("invalid pipeline JSON: {message}")]
    Json {
        /// The 1-based line of the problem, when known.
        line: Option<usize>,
        /// The parser's message, with line and column.
        message: String,
    },
}

impl PipelineSpec {
    /// Parses a pipeline file's text (TOML, steps as `[[step]]`). Does not validate: see
    /// [`Pipeline::new`].
    pub fn from_toml_str(text: &str) -> Result<Self, SpecError> {
        toml::from_str(text).map_err(|err| SpecError::Toml {
            line: err.span().map(|span| line_of(text, span.start)),
            message: err.to_string().trim_end().to_owned(),
        })
    }

    /// Parses a JSON pipeline (steps as `"steps"` or `"step"`). Does not validate: see [`Pipeline::new`].
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        serde_json::from_str(text).map_err(|err| SpecError::Json {
            line: Some(err.line()).filter(|line| *line > 0),
            message: err.to_string(),
        })
    }

    /// Reads a pipeline file: JSON if its name ends in `.json`, TOML otherwise. Relative step `dir`s are
    /// resolved against the file's folder (see [`PipelineSpec::resolve_dirs`]). Does not validate.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut spec = if path.extension().is_some_and(|ext| ext == "json") {
            Self::from_json(&text)?
        } else {
            Self::from_toml_str(&text)?
        };
        if let Some(folder) = path.parent() {
            spec.resolve_dirs(folder);
        }
        Ok(spec)
    }

    /// Makes relative step `dir`s relative to `base` instead of the runner's working directory.
    pub fn resolve_dirs(&mut self, base: &Path) {
        for step in &mut self.steps {
            if let Some(dir) = step.dir.as_mut().filter(|dir| dir.is_relative()) {
                *dir = base.join(&*dir);
            }
        }
    }

    /// The step called `name`.
    pub fn step(&self, name: &str) -> Option<&StepSpec> {
        self.steps.iter().find(|step| step.name == name)
    }

    /// The cap on steps running at once: 1 in sequential mode, else `parallelism` (`None`: no cap).
    pub fn effective_parallelism(&self) -> Option<usize> {
        match self.mode {
            Mode::Sequential => Some(1),
            Mode::Dag | Mode::Parallel => self.parallelism,
        }
    }

    /// Checks everything that can be checked before running, and reports every problem at once.
    pub fn validate(&self) -> Result<(), ValidationError> {
        Graph::build(self).map(drop)
    }
}

/// The 1-based line that byte `offset` of `text` is on.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

/// One thing wrong with a pipeline spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Issue {
    /// The pipeline has no steps.
    #[error("the pipeline has no steps: add at least one [[step]] with a name and a command")]
    NoSteps,
    /// A step's name is empty.
    #[error("step number {position} has an empty name")]
    EmptyName {
        /// 1-based position of the step in declaration order.
        position: usize,
    },
    /// Two steps share a name.
    #[error("step name {name:?} is used by more than one step (steps number {first} and {second})")]
    DuplicateName {
        /// The name.
        name: String,
        /// 1-based position of the first step with it.
        first: usize,
        /// 1-based position of a later step with it.
        second: usize,
    },
    /// A step's command is empty, or its program is.
    #[error("step {step:?} has an empty command: give the program and its arguments, e.g. [\"make\", \"test\"]")]
    EmptyCommand {
        /// The step.
        step: String,
    },
    /// `after` names no step of this pipeline.
    #[error("step {step:?} runs after {after:?}, which is not a step of this pipeline")]
    UnknownDependency {
        /// The step.
        step: String,
        /// The name in its `after` list.
        after: String,
    },
    /// A step lists itself in `after`.
    #[error("step {step:?} runs after itself")]
    SelfDependency {
        /// The step.
        step: String,
    },
    /// Steps that wait for each other in a circle. Shown as `a -> b -> c -> a`, where `->` reads "runs
    /// after".
    #[error("dependency cycle: {}", cycle_text(steps))]
    Cycle {
        /// The steps of the cycle, each running after the next, the last after the first.
        steps: Vec<String>,
    },
    /// `parallelism = 0`.
    #[error("parallelism must be at least 1 (leave it out for no limit)")]
    ZeroParallelism,
    /// A parallelism above 1 with `mode = "sequential"`.
    #[error("parallelism = {parallelism} conflicts with mode = \"sequential\", which runs one step at a time")]
    SequentialParallelism {
        /// The parallelism given.
        parallelism: usize,
    },
}

fn cycle_text(steps: &[String]) -> String {
    let mut text = steps.join(" -> ");
    if let Some(first) = steps.first() {
        text.push_str(" -> ");
        text.push_str(first);
    }
    text
}

/// Every problem found in a pipeline spec, in a stable order. Nothing runs when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The problems, at least one.
    pub issues: Vec<Issue>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.issues.as_slice() {
            [issue] => write!(f, "invalid pipeline: {issue}"),
            issues => {
                write!(f, "invalid pipeline ({} problems): ", issues.len())?;
                for (idx, issue) in issues.iter().enumerate() {
                    if idx > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{issue}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ValidationError {}

/// A validated pipeline, ready for [`Runner::start`](super::Runner::start): names unique, commands
/// present, dependencies known and acyclic.
#[derive(Debug, Clone)]
pub struct Pipeline {
    spec: PipelineSpec,
    graph: Graph,
}

impl Pipeline {
    /// Validates `spec`; see [`PipelineSpec::validate`].
    pub fn new(spec: PipelineSpec) -> Result<Self, ValidationError> {
        let graph = Graph::build(&spec)?;
        Ok(Pipeline { spec, graph })
    }

    /// The spec.
    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// Gives the spec back.
    pub fn into_spec(self) -> PipelineSpec {
        self.spec
    }

    pub(crate) fn graph(&self) -> &Graph {
        &self.graph
    }
}

impl TryFrom<PipelineSpec> for Pipeline {
    type Error = ValidationError;

    fn try_from(spec: PipelineSpec) -> Result<Self, ValidationError> {
        Pipeline::new(spec)
    }
}

/// The dependency graph by step index.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    /// `deps[i]`: the steps step `i` runs after (deduplicated).
    pub(crate) deps: Vec<Vec<usize>>,
    /// `dependents[i]`: the steps that run after step `i`, in declaration order.
    pub(crate) dependents: Vec<Vec<usize>>,
}

impl Graph {
    /// Builds the graph, collecting every issue of `spec`.
    fn build(spec: &PipelineSpec) -> Result<Graph, ValidationError> {
        let mut issues = Vec::new();
        match spec.parallelism {
            Some(0) => issues.push(Issue::ZeroParallelism),
            Some(parallelism) if parallelism > 1 && spec.mode == Mode::Sequential => {
                issues.push(Issue::SequentialParallelism { parallelism })
            }
            _ => {}
        }
        if spec.steps.is_empty() {
            issues.push(Issue::NoSteps);
        }
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for (idx, step) in spec.steps.iter().enumerate() {
            if step.name.trim().is_empty() {
                issues.push(Issue::EmptyName { position: idx + 1 });
            } else if let Some(&first) = by_name.get(step.name.as_str()) {
                issues.push(Issue::DuplicateName {
                    name: step.name.clone(),
                    first: first + 1,
                    second: idx + 1,
                });
            } else {
                by_name.insert(&step.name, idx);
            }
            if !matches!(step.command.first(), Some(program) if !program.is_empty()) {
                issues.push(Issue::EmptyCommand {
                    step: step.name.clone(),
                });
            }
        }
        let n_steps = spec.steps.len();
        let mut deps = vec![Vec::new(); n_steps];
        let mut dependents = vec![Vec::new(); n_steps];
        for (idx, step) in spec.steps.iter().enumerate() {
            // A name listed twice is one dependency, and one problem when it is one.
            let mut listed = std::collections::HashSet::new();
            for after in step.after.iter().filter(|after| listed.insert(after.as_str())) {
                if *after == step.name {
                    issues.push(Issue::SelfDependency {
                        step: step.name.clone(),
                    });
                    continue;
                }
                match by_name.get(after.as_str()) {
                    Some(&dep) if !deps[idx].contains(&dep) => {
                        deps[idx].push(dep);
                        dependents[dep].push(idx);
                    }
                    Some(_) => {}
                    None => issues.push(Issue::UnknownDependency {
                        step: step.name.clone(),
                        after: after.clone(),
                    }),
                }
            }
        }
        for list in &mut dependents {
            list.sort_unstable();
        }
        for cycle in find_cycles(&deps) {
            issues.push(Issue::Cycle {
                steps: cycle.into_iter().map(|idx| spec.steps[idx].name.clone()).collect(),
            });
        }
        if issues.is_empty() {
            Ok(Graph { deps, dependents })
        } else {
            Err(ValidationError { issues })
        }
    }
}

/// One cycle per strongly connected component with more than one step (self-loops are reported
/// separately and not in `deps`), starting at the component's first-declared step and following
/// `deps` edges along a shortest way back to it.
fn find_cycles(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut cycles = Vec::new();
    for component in strongly_connected_components(deps) {
        if component.len() < 2 {
            continue;
        }
        let Some(&start) = component.iter().min() else {
            continue;
        };
        let mut in_component = vec![false; deps.len()];
        for &member in &component {
            in_component[member] = true;
        }
        // Breadth-first search from `start` back to `start`, staying inside the component.
        let mut previous: HashMap<usize, usize> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closing = None;
        'search: while let Some(node) = queue.pop_front() {
            for &next in &deps[node] {
                if !in_component[next] {
                    continue;
                }
                if next == start {
                    closing = Some(node);
                    break 'search;
                }
                if let std::collections::hash_map::Entry::Vacant(entry) = previous.entry(next) {
                    entry.insert(node);
                    queue.push_back(next);
                }
            }
        }
        let Some(mut node) = closing else {
            continue;
        };
        let mut cycle = vec![node];
        while node != start {
            node = previous[&node];
            cycle.push(node);
        }
        cycle.reverse();
        cycles.push(cycle);
    }
    cycles.sort();
    cycles
}

/// Tarjan's algorithm, iterative (a long chain of steps must not overflow the stack).
fn strongly_connected_components(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNVISITED: usize = usize::MAX;
    let n_nodes = deps.len();
    let mut index = vec![UNVISITED; n_nodes];
    let mut lowlink = vec![0; n_nodes];
    let mut on_stack = vec![false; n_nodes];
    let mut stack = Vec::new();
    let mut components = Vec::new();
    let mut next_index = 0;
    for root in 0..n_nodes {
        if index[root] != UNVISITED {
            continue;
        }
        // Each frame: a node and how many of its edges have been followed.
        let mut frames = vec![(root, 0)];
        index[root] = next_index;
        lowlink[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(frame) = frames.last_mut() {
            let (node, edge) = *frame;
            if let Some(&next) = deps[node].get(edge) {
                frame.1 += 1;
                if index[next] == UNVISITED {
                    index[next] = next_index;
                    lowlink[next] = next_index;
                    next_index += 1;
                    stack.push(next);
                    on_stack[next] = true;
                    frames.push((next, 0));
                } else if on_stack[next] {
                    lowlink[node] = lowlink[node].min(index[next]);
                }
                continue;
            }
            frames.pop();
            if let Some(&(parent, _)) = frames.last() {
                lowlink[parent] = lowlink[parent].min(lowlink[node]);
            }
            if lowlink[node] == index[node] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(steps: Vec<StepSpec>) -> PipelineSpec {
        PipelineSpec {
            steps,
            ..PipelineSpec::default()
        }
    }

    fn issues(spec: &PipelineSpec) -> Vec<Issue> {
        spec.validate().expect_err("should be invalid").issues
    }

    #[test]
    fn accepts_a_valid_dag() {
        let spec = spec(vec![
            StepSpec::new("fetch", ["true"]),
            StepSpec::new("build", ["true"]).after(["fetch"]),
            StepSpec::new("test", ["true"]).after(["build", "fetch", "build"]),
        ]);
        let pipeline = Pipeline::new(spec).expect("UNWRAP: valid");
        assert_eq!(pipeline.graph().deps, vec![vec![], vec![0], vec![1, 0]]);
        assert_eq!(pipeline.graph().dependents, vec![vec![1, 2], vec![2], vec![]]);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let mut spec = spec(vec![
            StepSpec::new("a", ["true"]),
            StepSpec::new("a", ["true"]),
            StepSpec::new("", ["true"]),
            StepSpec::new("b", Vec::<String>::new()),
            // Listed twice, each is still one problem.
            StepSpec::new("c", [""]).after(["nope", "c", "nope", "c"]),
        ]);
        spec.parallelism = Some(0);
        let found = issues(&spec);
        assert_eq!(
            found,
            vec![
                Issue::ZeroParallelism,
                Issue::DuplicateName {
                    name: "a".into(),
                    first: 1,
                    second: 2
                },
                Issue::EmptyName { position: 3 },
                Issue::EmptyCommand { step: "b".into() },
                Issue::EmptyCommand { step: "c".into() },
                Issue::UnknownDependency {
                    step: "c".into(),
                    after: "nope".into()
                },
                Issue::SelfDependency { step: "c".into() },
            ]
        );
        let text = spec.validate().expect_err("invalid").to_string();
        assert!(text.starts_with("invalid pipeline (7 problems): "), "{text}");
        assert!(text.contains("\"nope\", which is not a step"), "{text}");
    }

    #[test]
    fn empty_pipeline_and_sequential_parallelism() {
        assert_eq!(issues(&spec(vec![])), vec![Issue::NoSteps]);
        let mut sequential = spec(vec![StepSpec::new("a", ["true"])]);
        sequential.mode = Mode::Sequential;
        sequential.parallelism = Some(1);
        assert!(sequential.validate().is_ok());
        sequential.parallelism = Some(3);
        assert_eq!(
            issues(&sequential),
            vec![Issue::SequentialParallelism { parallelism: 3 }]
        );
    }

    #[test]
    fn names_the_steps_of_each_cycle() {
        let spec = spec(vec![
            StepSpec::new("ok", ["true"]),
            StepSpec::new("a", ["true"]).after(["c"]),
            StepSpec::new("b", ["true"]).after(["a", "ok"]),
            StepSpec::new("c", ["true"]).after(["b"]),
            StepSpec::new("x", ["true"]).after(["y"]),
            StepSpec::new("y", ["true"]).after(["x"]),
            StepSpec::new("after_cycle", ["true"]).after(["x"]),
        ]);
        let found = issues(&spec);
        assert_eq!(
            found,
            vec![
                Issue::Cycle {
                    steps: vec!["a".into(), "c".into(), "b".into()]
                },
                Issue::Cycle {
                    steps: vec!["x".into(), "y".into()]
                },
            ]
        );
        assert_eq!(found[0].to_string(), "dependency cycle: a -> c -> b -> a");
    }

    #[test]
    fn long_chains_do_not_overflow() {
        let steps = (0..20_000)
            .map(|idx| {
                let step = StepSpec::new(format!("s{idx}"), ["true"]);
                if idx == 0 {
                    step.after(["s19999"])
                } else {
                    step.after([format!("s{}", idx - 1)])
                }
            })
            .collect();
        let found = issues(&spec(steps));
        assert!(matches!(&found[..], [Issue::Cycle { steps }] if steps.len() == 20_000));
    }

    #[test]
    fn parses_json_with_either_key() {
        let spec = PipelineSpec::from_json(
            r#"{"mode": "parallel", "steps": [{"name": "a", "command": ["true"], "timeout": "1m"}]}"#,
        )
        .expect("UNWRAP: valid");
        assert_eq!(spec.mode, Mode::Parallel);
        assert_eq!(spec.steps[0].timeout, Some(Duration::from_secs(60)));
        let same = PipelineSpec::from_json(
            r#"{"mode": "parallel", "step": [{"name": "a", "command": ["true"], "timeout": 60000000000}]}"#,
        )
        .expect("UNWRAP: valid");
        assert_eq!(same, spec);
        let json = serde_json::to_string(&spec).expect("UNWRAP: serializable");
        assert_eq!(
            json,
            r#"{"mode":"parallel","steps":[{"name":"a","command":["true"],"timeout":"1m"}]}"#
        );
        let err = PipelineSpec::from_json("{\n\"steps\": [{\"name\": \"a\", \"comand\": []}]}").expect_err("typo");
        assert!(
            matches!(&err, SpecError::Json { line: Some(2), message } if message.contains("comand")),
            "{err}"
        );
    }

    #[test]
    fn resolves_relative_dirs() {
        let mut spec = spec(vec![
            StepSpec::new("a", ["true"]).dir("sub"),
            StepSpec::new("b", ["true"]).dir("/abs"),
            StepSpec::new("c", ["true"]),
        ]);
        spec.resolve_dirs(Path::new("/etc/pipelines"));
        assert_eq!(spec.steps[0].dir.as_deref(), Some(Path::new("/etc/pipelines/sub")));
        assert_eq!(spec.steps[1].dir.as_deref(), Some(Path::new("/abs")));
        assert_eq!(spec.steps[2].dir, None);
    }

    #[test]
    fn debug_hides_env_values() {
        let step = StepSpec::new("a", ["true"]).env("TOKEN", "hunter2");
        let text = format!("{step:?}");
        assert!(text.contains("TOKEN") && !text.contains("hunter2"), "{text}");
    }
}
