//! The cluster's REST API as its admin, for tests that create many pods: one HTTP/2
//! connection instead of a kubectl process per create, so a create's time is the apiserver's.

use serde_json::Value;

use super::cluster::Cluster;

pub struct Api {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    url: String,
}

impl Api {
    pub fn new(c: &Cluster) -> Api {
        let pem = |f: &str| std::fs::read(c.dir.join("pki").join(f)).unwrap();
        let identity =
            reqwest::Identity::from_pem(&[pem("admin.crt"), pem("admin.key")].concat()).unwrap();
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem("ca.crt")).unwrap())
            .identity(identity)
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Api {
            rt,
            client,
            url: c.apiserver.clone(),
        }
    }

    /// Creates `pod` in its namespace: the pod as stored, or the apiserver's status line and
    /// message.
    pub fn create_pod(&self, pod: &Value) -> Result<Value, String> {
        let ns = pod["metadata"]["namespace"].as_str().unwrap();
        let url = format!("{}/api/v1/namespaces/{ns}/pods", self.url);
        self.rt.block_on(async {
            let res = self
                .client
                .post(&url)
                .header("content-type", "application/json")
                .body(pod.to_string())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = res.status();
            let body = res.text().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                let message = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(String::from))
                    .unwrap_or(body);
                return Err(format!("{status}: {message}"));
            }
            serde_json::from_str(&body).map_err(|e| e.to_string())
        })
    }
}
