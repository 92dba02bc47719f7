//! core's HTTP client against a scripted HTTP peer: transient failures (503) are retried with
//! backoff until an answer arrives; a 4xx error body becomes a typed `Error::Server` with the
//! wire's code; a cancelled token stops a client that keeps being told to retry.
#![cfg(feature = "client")]
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use fedp2eft_core::federated::http::FedClient;
use fedp2eft_core::{CancelToken, Control, Error};
use fedp2eft_wire::Task;

/// Answers each connection with the next (status, body) of `script`, then stops.
fn scripted(script: Vec<(u16, &'static str)>) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        for (status, body) in script {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes());
        }
    });
    Ok(url)
}

fn fast(c: &mut FedClient) {
    c.retry.first_delay = Duration::from_millis(10);
    c.retry.max_delay = Duration::from_millis(40);
}

#[test]
fn transient_failures_are_retried_until_an_answer() -> anyhow::Result<()> {
    let url = scripted(vec![
        (503, "{}"),
        (503, "{}"),
        (200, r#"{"task":"wait","retry_after_s":3}"#),
    ])?;
    let mut c = FedClient::new(&url, "run1", "tok")?;
    fast(&mut c);
    assert_eq!(
        c.task(&Control::default())?,
        Task::Wait { retry_after_s: 3 }
    );
    Ok(())
}

#[test]
fn client_errors_are_typed_and_not_retried() -> anyhow::Result<()> {
    let body = r#"{"error":{"code":"unauthorized","message":"unknown token"}}"#;
    let url = scripted(vec![
        (401, body),
        (200, r#"{"task":"wait","retry_after_s":3}"#),
    ])?;
    let mut c = FedClient::new(&url, "run1", "bad")?;
    fast(&mut c);
    match c.task(&Control::default()) {
        Err(Error::Server {
            status: Some(401),
            code,
            ..
        }) => assert_eq!(code, "unauthorized"),
        other => panic!("expected a 401 Server error, got {:?}", other.err()),
    }
    Ok(())
}

#[test]
fn giving_up_after_the_last_attempt_and_cancellation() -> anyhow::Result<()> {
    let url = scripted(vec![(503, "{}"); 3])?;
    let mut c = FedClient::new(&url, "run1", "tok")?;
    fast(&mut c);
    c.retry.attempts = 3;
    assert!(matches!(
        c.task(&Control::default()),
        Err(Error::Server {
            status: Some(503),
            ..
        })
    ));
    let cancel = CancelToken::new();
    cancel.cancel();
    let ctl = Control::default().with_cancel(cancel);
    assert!(matches!(c.task(&ctl), Err(Error::Cancelled)));
    Ok(())
}
