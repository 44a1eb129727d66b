//! HTTP/1.1 to the daemon over its Unix socket or TCP, with hyper: one connection per request.

use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::ErrorBody;

/// How long a command waiting on durable work waits for a lost daemon to answer again
/// ([`Client::get_through_restarts`]).
pub(crate) const WAIT_FOR_DAEMON: std::time::Duration = std::time::Duration::from_secs(60);

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Unix(PathBuf),
    Tcp { authority: String },
}

/// A connection recipe to the daemon.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    target: Target,
    token: Option<String>,
    /// Set once a daemon answered a request of this command (any answer): a later failure to reach one is
    /// then a daemon that went away, not one that was never there.
    answered: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Could not reach the daemon at all (as opposed to an error answer).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unreachable(pub(crate) String);

/// An error answer from the daemon.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl Client {
    /// `--socket`/`$CORRAL_SOCKET`, else `--url`/`$CORRAL_URL`, else the default state dir's socket.
    pub(crate) fn new(socket: Option<PathBuf>, url: Option<String>, token: Option<String>) -> anyhow::Result<Client> {
        let target = if let Some(socket) = socket {
            Target::Unix(socket)
        } else if let Some(url) = url {
            let rest = url
                .strip_prefix("http://")
                .ok_or_else(|| anyhow::anyhow!("--url must start with http:// (got {url:?})"))?;
            let authority = rest.split('/').next().unwrap_or(rest).to_owned();
            if authority.is_empty() {
                anyhow::bail!("--url has no host: {url:?}");
            }
            Target::Tcp { authority }
        } else {
            Target::Unix(crate::config::client_state_dir().join("corral.sock"))
        };
        Ok(Client {
            target,
            token,
            answered: Default::default(),
        })
    }

    fn describe(&self) -> String {
        match &self.target {
            Target::Unix(path) => path.display().to_string(),
            Target::Tcp { authority } => format!("http://{authority}"),
        }
    }

    /// Sends one request with an optional JSON body and returns the raw response (body not read yet).
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Response<Incoming>> {
        self.send_typed(method, path, body.map(|body| (body, "application/json")))
            .await
    }

    /// Sends bytes as they are (`application/octet-stream`); error answers become [`ApiError`].
    pub(crate) async fn post_bytes(&self, path: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let response = self
            .send_typed(Method::POST, path, Some((body, "application/octet-stream")))
            .await?;
        success_body(response).await.map(drop)
    }

    async fn send_typed(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &'static str)>,
    ) -> anyhow::Result<Response<Incoming>> {
        let host = match &self.target {
            Target::Unix(_) => "localhost".to_owned(),
            Target::Tcp { authority } => authority.clone(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host);
        if let Some(token) = &self.token {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some((body, content_type)) => {
                builder = builder.header(hyper::header::CONTENT_TYPE, content_type);
                body
            }
            None => Vec::new(),
        };
        let request = builder.body(Full::new(Bytes::from(body)))?;
        let unreachable = |err: std::io::Error| {
            Unreachable(format!(
                "no corral daemon at {} ({err}); start one with `corral daemon`",
                self.describe()
            ))
        };
        let response = match &self.target {
            Target::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(unreachable)?;
                exchange(stream, request).await?
            }
            Target::Tcp { authority } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .map_err(unreachable)?;
                exchange(stream, request).await?
            }
        };
        self.answered.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(response)
    }

    /// Sends a request with an optional JSON body and decodes a JSON answer; error answers become
    /// [`ApiError`].
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let bytes = success_body(self.send(method, path, body).await?).await?;
        serde_json::from_slice(&bytes).with_context(|| format!("unexpected answer from the daemon to {path}"))
    }

    /// `GET path` for a command that waits on durable work (`what`: "task ID", "pipeline ID", ...). When the
    /// daemon does not answer (it stopped or crashed; or it is starting and says 503), the work goes on once
    /// a daemon runs again: this says so once and retries for up to [`WAIT_FOR_DAEMON`], then fails with
    /// `later`, the command that finds the work again. Other error answers are returned at once.
    pub(crate) async fn get_through_restarts<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
        later: &str,
    ) -> anyhow::Result<T> {
        let mut lost: Option<std::time::Instant> = None;
        loop {
            let err = match self.call(Method::GET, path, None::<&()>).await {
                Ok(answer) => return Ok(answer),
                Err(err) => err,
            };
            let transient = err
                .downcast_ref::<ApiError>()
                .is_none_or(|answer| answer.status == StatusCode::SERVICE_UNAVAILABLE);
            // No daemon ever answered this command: say so at once, as any command does.
            if !transient || !self.answered.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(err);
            }
            let since = *lost.get_or_insert_with(|| {
                errln!("corral: lost the daemon ({err:#}); {what} goes on once a daemon runs again: waiting for one");
                std::time::Instant::now()
            });
            if since.elapsed() > WAIT_FOR_DAEMON {
                anyhow::bail!(
                    "no daemon answered for {} s; {what} goes on once one runs: `{later}`",
                    WAIT_FOR_DAEMON.as_secs()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// Opens a server-sent-events stream.
    pub(crate) async fn events(&self, path: &str) -> anyhow::Result<SseReader> {
        let response = self.send(Method::GET, path, None).await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.into_body().collect().await?.to_bytes();
            return Err(api_error(status, &bytes).into());
        }
        Ok(SseReader {
            body: response.into_body(),
            buffer: Vec::new(),
        })
    }
}

/// The whole body of a success answer; an error answer becomes [`ApiError`].
async fn success_body(response: Response<Incoming>) -> anyhow::Result<Bytes> {
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .context("reading the daemon's answer")?
        .to_bytes();
    if !status.is_success() {
        return Err(api_error(status, &bytes).into());
    }
    Ok(bytes)
}

fn api_error(status: StatusCode, bytes: &[u8]) -> ApiError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ApiError {
            status,
            code: body.code,
            message: body.error,
        },
        Err(_) => ApiError {
            status,
            code: "http_error".into(),
            message: format!("daemon answered {status}: {}", String::from_utf8_lossy(bytes).trim()),
        },
    }
}

async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> anyhow::Result<Response<Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake with the daemon failed")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .context("the daemon closed the connection")
}

/// One server-sent event.
#[derive(Debug, Clone, Default)]
pub(crate) struct SseEvent {
    pub(crate) event: String,
    pub(crate) data: String,
}

/// Reads events from an SSE body.
pub(crate) struct SseReader {
    body: Incoming,
    buffer: Vec<u8>,
}

impl SseReader {
    /// The next event, or `None` at the end of the stream.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<SseEvent>> {
        loop {
            if let Some(end) = find_event_end(&self.buffer) {
                let block: Vec<u8> = self.buffer.drain(..end.0 + end.1).collect();
                let text = String::from_utf8_lossy(&block[..end.0]).into_owned();
                let mut event = SseEvent::default();
                let mut data_lines = Vec::new();
                for line in text.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        event.event = value.trim_start().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data_lines.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                    }
                }
                if event.event.is_empty() && data_lines.is_empty() {
                    continue; // a keep-alive comment
                }
                event.data = data_lines.join("\n");
                return Ok(Some(event));
            }
            match self.body.frame().await {
                Some(frame) => {
                    if let Ok(data) = frame.context("reading the event stream")?.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                None => return Ok(None),
            }
        }
    }
}

/// Finds the blank line ending an event: (position, separator length).
fn find_event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|p| (p, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}
