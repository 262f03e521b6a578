//! The readiness probe of a starting service: one HTTP/1.1 GET over a connection the
//! executor opens into the project's workspace.

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::domain::ProjectId;
use crate::ports::Executor;

/// The status `GET path` answers with on `port` of the project's workspace.
pub(super) async fn get(
    executor: &dyn Executor,
    project: &ProjectId,
    port: u16,
    path: &str,
    authorization: Option<&str>,
) -> Result<u16, String> {
    let stream = executor
        .connect(project, port)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request =
        hyper::Request::get(path).header(hyper::header::HOST, format!("localhost:{port}"));
    if let Some(value) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid request: {e}"))?;
    let answer = sender.send_request(request).await;
    connection.abort();
    answer
        .map(|response| response.status().as_u16())
        .map_err(|e| e.to_string())
}
