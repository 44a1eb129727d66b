//! Process-wide resource limits a supervisor needs.

/// The most open files [`raise_open_files_limit`] asks for.
pub const OPEN_FILES_TARGET: u64 = 65_536;

/// Raises this process's soft limit on open files to its hard limit (at most [`OPEN_FILES_TARGET`])
/// and returns the soft limit now in force (`None`: unlimited or unknown). Each supervised process
/// costs its supervisor about three descriptors (a pidfd and two pipes), so the common default of
/// 1,024 would cap a daemon at about 330 processes. Children inherit the raised limit.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current?;
    let target = limit
        .maximum
        .map_or(OPEN_FILES_TARGET, |max| max.min(OPEN_FILES_TARGET));
    if target > current {
        let raised = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: limit.maximum,
            },
        );
        if raised.is_ok() {
            return Some(target);
        }
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_never_goes_down() {
        let before = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let after = super::raise_open_files_limit();
        assert!(
            after >= before.map(|b| b.min(super::OPEN_FILES_TARGET)),
            "{before:?} -> {after:?}"
        );
    }
}
