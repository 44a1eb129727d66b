//! Listeners: the Unix socket (peer credentials checked on accept) and the optional TCP port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{UnixListener, UnixStream};

/// A Unix socket listener that serves only our own uid and root: other peers are dropped at accept.
pub(crate) struct PeerCheckedUnixListener {
    inner: UnixListener,
    uid: u32,
}

impl PeerCheckedUnixListener {
    /// Binds `path` with mode 0600, replacing a stale socket file left by a crashed daemon (we hold the
    /// state-dir lock, so no live daemon owns it).
    pub(crate) fn bind(path: &Path) -> std::io::Result<PeerCheckedUnixListener> {
        match std::fs::remove_file(path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        // Create it with no permissions for anyone else from the first instant.
        let old_umask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = UnixListener::bind(path);
        rustix::process::umask(old_umask);
        let inner = bound?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(PeerCheckedUnixListener {
            inner,
            uid: rustix::process::getuid().as_raw(),
        })
    }
}

impl Listener for PeerCheckedUnixListener {
    type Io = UnixStream;
    type Addr = PathBuf;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, _)) => match stream.peer_cred() {
                    Ok(cred) if cred.uid() == self.uid || cred.uid() == 0 => return (stream, PathBuf::new()),
                    Ok(cred) => {
                        tracing::warn!(uid = cred.uid(), "refused a connection on the socket from another user");
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot read peer credentials; connection refused"),
                },
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self
            .inner
            .local_addr()?
            .as_pathname()
            .map(Path::to_owned)
            .unwrap_or_default())
    }
}
