//! The bounds on one client connection (RFC 9113), reached with hand-written HTTP/2 frames
//! over a TLS connection that presents a certificate from the configured CA — what any
//! certificate holder can send before a token is checked.

use std::{sync::Arc, time::Duration};

use casegate::dev::pki::CertifiedKey;
use casegate_tests::{TestGateway, scenario::eventually};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;
const NO_ERROR: u32 = 0x0;
const CANCEL: u32 = 0x8;

/// A TLS connection to the gateway (ALPN `h2`) as `client`.
async fn connect(gw: &TestGateway, client: &CertifiedKey) -> TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(gw.ca_pem().as_bytes()).expect("CA PEM"))
        .expect("CA");
    let mut config = ClientConfig::builder_with_provider(casegate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).expect("key"),
        )
        .expect("client auth");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

/// One frame (RFC 9113 §4.1).
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small payload");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// The client's connection preface and an empty SETTINGS frame (§3.4).
fn preface() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// SETTINGS with the ACK flag (§6.5.3).
fn frame_ack() -> Vec<u8> {
    frame(SETTINGS, 0x1, 0, &[])
}

struct Frame {
    kind: u8,
    payload: Vec<u8>,
}

/// The next frame, `None` at the end of the connection or after `idle` without one.
async fn next_frame(reader: &mut (impl AsyncRead + Unpin), idle: Duration) -> Option<Frame> {
    let read = async {
        let mut head = [0u8; 9];
        reader.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        reader.read_exact(&mut payload).await.ok()?;
        Some(Frame {
            kind: head[3],
            payload,
        })
    };
    tokio::time::timeout(idle, read).await.ok().flatten()
}

/// What the server answered: streams it reset and the GOAWAY error code, if it sent one.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    resets: usize,
    goaway: Option<u32>,
}

/// Writes `frames` after the preface (in chunks, while reading) and reads the answer until
/// GOAWAY, the end of the connection, or 5 s without a frame.
async fn send_and_read(tls: TlsStream<TcpStream>, frames: Vec<Vec<u8>>) -> Answer {
    let (mut reader, mut writer) = tokio::io::split(tls);
    let write = tokio::spawn(async move {
        writer.write_all(&preface()).await?;
        for chunk in frames.chunks(100) {
            writer.write_all(&chunk.concat()).await?;
        }
        writer.flush().await?;
        // Keep the connection open for reading.
        Ok::<_, std::io::Error>(writer)
    });
    let mut answer = Answer {
        resets: 0,
        goaway: None,
    };
    while let Some(frame) = next_frame(&mut reader, Duration::from_secs(5)).await {
        match frame.kind {
            RST_STREAM => answer.resets += 1,
            GOAWAY => {
                let code = &frame.payload[4..8];
                answer.goaway = Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
                break;
            }
            _ => {}
        }
    }
    // A write refused after GOAWAY is expected.
    let _ = write.await;
    answer
}

/// A gRPC request for `path` (HPACK, RFC 7541, no Huffman coding, nothing indexed).
fn request_block(path: &str) -> Vec<u8> {
    let literal = |out: &mut Vec<u8>, value: &str| {
        out.push(u8::try_from(value.len()).expect("short"));
        out.extend(value.as_bytes());
    };
    let mut block = vec![0x83, 0x87]; // :method POST, :scheme https
    block.push(0x04); // :path, literal without indexing
    literal(&mut block, path);
    block.push(0x01); // :authority
    literal(&mut block, "localhost");
    block.extend([0x0f, 0x10]); // content-type (static index 31)
    literal(&mut block, "application/grpc");
    block.push(0x00); // te: trailers, new name
    literal(&mut block, "te");
    literal(&mut block, "trailers");
    block
}

#[tokio::test]
async fn a_flood_of_malformed_requests_is_cut_off_with_enhance_your_calm() {
    let gw = TestGateway::start().await;
    let tls = connect(&gw, &gw.org("clinic").cert).await;
    // 3,000 requests that carry only `:method: POST` (HPACK 0x83), each a protocol error the
    // gateway answers by resetting the stream (RFC 9113 §8.1.1).
    let frames = (0..3000u32)
        .map(|i| frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &[0x83]))
        .collect();
    let answer = send_and_read(tls, frames).await;
    println!("malformed requests: {answer:?}");
    assert_eq!(
        answer.goaway,
        Some(ENHANCE_YOUR_CALM),
        "the connection must be closed with ENHANCE_YOUR_CALM: {answer:?}"
    );
    assert!(
        answer.resets <= casegate::server::MAX_LOCAL_ERROR_RESETS,
        "{answer:?}"
    );
}

#[tokio::test]
async fn requests_opened_and_reset_at_once_are_cut_off_with_enhance_your_calm() {
    let gw = TestGateway::start().await;
    let tls = connect(&gw, &gw.org("clinic").cert).await;
    let block = request_block("/grpc.health.v1.Health/Check");
    let frames = (0..2000u32)
        .flat_map(|i| {
            let id = 2 * i + 1;
            [
                frame(HEADERS, END_HEADERS, id, &block),
                frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()),
            ]
        })
        .collect();
    let answer = send_and_read(tls, frames).await;
    assert_eq!(answer.goaway, Some(ENHANCE_YOUR_CALM), "{answer:?}");
}

#[tokio::test]
async fn the_gateway_announces_its_stream_and_header_bounds() {
    let gw =
        TestGateway::start_with_overrides("", &[("CASEGATE_LIMITS__MAX_CONCURRENT_STREAMS", "37")])
            .await;
    let mut tls = connect(&gw, &gw.org("clinic").cert).await;
    tls.write_all(&preface()).await.expect("write");
    let settings = next_frame(&mut tls, Duration::from_secs(5))
        .await
        .expect("a frame");
    assert_eq!(settings.kind, SETTINGS, "the server's preface is SETTINGS");
    let params: Vec<(u16, u32)> = settings
        .payload
        .chunks_exact(6)
        .map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
            )
        })
        .collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3) and SETTINGS_MAX_HEADER_LIST_SIZE (0x6).
    assert!(params.contains(&(0x3, 37)), "{params:?}");
    assert!(
        params.contains(&(0x6, casegate::server::MAX_HEADER_LIST_BYTES)),
        "{params:?}"
    );
}

#[tokio::test]
async fn a_connection_gets_goaway_at_its_maximum_age_and_is_cut_after_the_grace_period() {
    let gw = TestGateway::start_with_overrides(
        "",
        &[
            ("CASEGATE_SERVER__MAX_CONNECTION_AGE", "1s"),
            ("CASEGATE_SERVER__MAX_CONNECTION_AGE_GRACE", "1s"),
        ],
    )
    .await;
    let tls = connect(&gw, &gw.org("clinic").cert).await;
    let (mut reader, mut writer) = tokio::io::split(tls);
    // A health Watch stream (mTLS only, no token) that the server keeps open, so only the
    // cut at the end of the grace period can end the connection.
    let mut opening = preface();
    opening.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &request_block("/grpc.health.v1.Health/Watch"),
    ));
    opening.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]));
    writer.write_all(&opening).await.expect("write");
    let mut goaway = None;
    while let Some(frame) = next_frame(&mut reader, Duration::from_secs(10)).await {
        if frame.kind == SETTINGS && !frame.payload.is_empty() {
            writer.write_all(&frame_ack()).await.expect("ack");
        }
        if frame.kind == GOAWAY {
            goaway = Some(u32::from_be_bytes(
                frame.payload[4..8].try_into().expect("code"),
            ));
            break;
        }
    }
    assert_eq!(goaway, Some(NO_ERROR), "GOAWAY after the maximum age");
    // The watch stream stays open; the connection is cut when the grace period ends.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut rest)).await;
    assert!(
        ended.is_ok(),
        "the connection must end after the grace period"
    );
}

#[tokio::test]
async fn a_client_that_does_not_complete_the_handshake_is_dropped() {
    let gw =
        TestGateway::start_with_overrides("", &[("CASEGATE_SERVER__HANDSHAKE_TIMEOUT", "200ms")])
            .await;
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the server must close a silent connection: {closed:?}"
    );
}

#[tokio::test]
async fn a_request_whose_headers_exceed_the_header_list_bound_is_refused() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let gw = TestGateway::start().await;
    let mut health = HealthClient::new(gw.channel("clinic").await);
    let with_padding = |bytes: usize| {
        let mut request = tonic::Request::new(HealthCheckRequest::default());
        let padding = "x".repeat(bytes).parse().expect("ascii");
        request.metadata_mut().insert("x-padding", padding);
        request
    };
    health
        .check(with_padding(4 << 10))
        .await
        .expect("headers within the bound are served");
    let bound = casegate::server::MAX_HEADER_LIST_BYTES as usize;
    let status = health
        .check(with_padding(bound + 1024))
        .await
        .expect_err("headers beyond the bound are refused");
    // HTTP 431 Request Header Fields Too Large (RFC 6585 §5), as RFC 9113 §10.5.1 suggests.
    assert!(status.message().contains("431"), "{status:?}");
}

#[tokio::test]
async fn a_client_that_does_not_answer_keepalive_pings_is_disconnected() {
    let gw = TestGateway::start_with_overrides(
        "",
        &[
            ("CASEGATE_SERVER__KEEPALIVE_INTERVAL", "1s"),
            ("CASEGATE_SERVER__KEEPALIVE_TIMEOUT", "1s"),
        ],
    )
    .await;
    let tls = connect(&gw, &gw.org("clinic").cert).await;
    let (mut reader, mut writer) = tokio::io::split(tls);
    writer.write_all(&preface()).await.expect("write");
    let mut pinged = false;
    // Frames until the end of the connection; PINGs are never answered.
    while let Some(frame) = next_frame(&mut reader, Duration::from_secs(10)).await {
        if frame.kind == SETTINGS && !frame.payload.is_empty() {
            writer.write_all(&frame_ack()).await.expect("ack");
        }
        pinged |= frame.kind == PING;
    }
    assert!(pinged, "the gateway pings a silent client");
    let mut rest = [0u8; 1];
    let after = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut rest)).await;
    assert!(
        matches!(after, Ok(Ok(0) | Err(_))),
        "the connection must be closed: {after:?}"
    );
}

#[tokio::test]
async fn connections_beyond_the_bound_are_closed_as_soon_as_they_are_accepted() {
    let gw =
        TestGateway::start_with_overrides("", &[("CASEGATE_SERVER__MAX_CONNECTIONS", "2")]).await;
    let client = &gw.org("clinic").cert;
    let first = connect(&gw, client).await;
    let _second = connect(&gw, client).await;
    let probe = || casegate_tests::tls_probe::probe(gw.addr, gw.ca_pem(), Some(client));
    // The two are registered once the server's side of their handshakes is done.
    let bound = Duration::from_secs(5);
    let third_refused = eventually(bound, || async { probe().await.is_err() }).await;
    assert!(third_refused, "a third connection must be closed");
    // Once one of the two closes, a new connection is served again.
    drop(first);
    assert!(
        eventually(bound, || async { probe().await.is_ok() }).await,
        "a connection is served again once one closes"
    );
}
