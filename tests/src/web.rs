//! Web tier test support: [`TestWeb`] serves the production web tier on `127.0.0.1:0` in front
//! of a [`TestGateway`], and [`WebClient`] is a small cookie-keeping HTTP/1.1 client for
//! tests that look at status codes, headers and HTML without a browser.

use std::{collections::BTreeMap, net::SocketAddr, sync::Mutex};

use casegate::{config::Config, web::Web};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::codegen::Bytes;

use crate::TestGateway;

/// The `[web]` section for a test gateway's folder: jobseekers through the portal's
/// certificate, officers through the supervisory authority's.
pub const CONFIG: &str = r#"
[web]
listen = "127.0.0.1:0"
# TestWeb sets the real address (CASEGATE_WEB__PUBLIC_URL) once it has bound its port.
public_url = "http://127.0.0.1:9"
gateway_ca = "ca.pem"
issuer = "casegate-test-web"
issuer_key = "web-issuer.key"

[web.jobseekers]
cert = "portal.pem"
key = "portal.key"

[web.officers]
cert = "authority.pem"
key = "authority.key"
"#;

/// The web tier, serving in this process.
#[derive(Debug)]
pub struct TestWeb {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestWeb {
    /// Serves the web tier of `gateway` (started with [`CONFIG`] in its config); `dev` turns on
    /// the development login picker.
    pub async fn start(gateway: &TestGateway, dev: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let public_url = (
            "CASEGATE_WEB__PUBLIC_URL".to_owned(),
            format!("http://{addr}"),
        );
        let config = Config::load_with_env(&gateway.config_path(), [public_url]).expect("config");
        let web = Web::build(&config, gateway.addr, dev)
            .expect("web tier builds")
            .expect("the config has [web]");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(casegate::web::serve(listener, web.router(), async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A new client with no cookies (a fresh browser).
    pub fn client(&self) -> WebClient {
        WebClient::to(&self.url(""))
    }

    /// Stops the listener and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Page {
    /// The form's CSRF token (the first `csrf` field on the page).
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let at = self.body.find(marker).expect("the page has a form") + marker.len();
        self.body[at..].split('"').next().expect("value").to_owned()
    }

    /// The `Location` of a redirect.
    pub fn location(&self) -> &str {
        self.headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The `<title>`.
    pub fn title(&self) -> &str {
        let start = self.body.find("<title>").map_or(0, |i| i + 7);
        let end = self.body[start..]
            .find("</title>")
            .map_or(start, |i| start + i);
        &self.body[start..end]
    }
}

/// A cookie-keeping client for one person's browser session. It keeps every cookie by name
/// and sends them all (it does not model `SameSite`: the browser tests do).
#[derive(Debug)]
pub struct WebClient {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
    cookies: Mutex<BTreeMap<String, String>>,
}

impl WebClient {
    /// A client for the plain-HTTP site at `base` (`http://127.0.0.1:PORT`), with no cookies.
    pub fn to(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: Client::builder(TokioExecutor::new()).build_http(),
            cookies: Mutex::new(BTreeMap::new()),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Page {
        self.send(http::Method::GET, path, Vec::new(), &[]).await
    }

    /// `POST path` of a form, as a same-site browser sends it.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded::to_string(fields).expect("form");
        self.post_raw(
            path,
            body,
            &[
                ("sec-fetch-site", "same-origin"),
                ("origin", &self.base.clone()),
            ],
        )
        .await
    }

    /// `POST path` with `body` (urlencoded) and exactly `headers`.
    pub async fn post_raw(&self, path: &str, body: String, headers: &[(&str, &str)]) -> Page {
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.send(http::Method::POST, path, body.into_bytes(), &all)
            .await
    }

    /// Continues a browser's session with its cookie `name` = `value`.
    pub fn use_cookie(&self, name: &str, value: &str) {
        self.cookies
            .lock()
            .expect("cookies")
            .insert(name.to_owned(), value.to_owned());
    }

    /// Logs in through the development picker as `who` (`jobseeker-1`, `officer`, …).
    pub async fn dev_login(&self, who: &str) {
        let picker = self.get("/dev/login").await;
        assert_eq!(picker.status, 200, "{}", picker.body);
        let done = self
            .post("/dev/login", &[("csrf", &picker.csrf()), ("who", who)])
            .await;
        assert_eq!(done.status, 303, "{}", done.body);
    }

    async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        let cookies: Vec<String> = self
            .cookies
            .lock()
            .expect("cookies")
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        if !cookies.is_empty() {
            request = request.header(http::header::COOKIE, cookies.join("; "));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).expect("request");
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.http.request(request),
        )
        .await
        .expect("answer within 30 s")
        .expect("HTTP answer");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for set in headers.get_all(http::header::SET_COOKIE) {
            let text = set.to_str().unwrap_or_default();
            let pair = text.split(';').next().unwrap_or_default();
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let mut cookies = self.cookies.lock().expect("cookies");
            if text.contains("Max-Age=0") || value.is_empty() {
                cookies.remove(name);
            } else {
                cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Page {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}
