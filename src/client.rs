//! What the command-line clients (`demo`, `import`) share: where the service
//! is, which key to call it with, and a channel to it (TLS when the target is
//! `https://`).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
};

use anyhow::Context as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::config::ClientOptions;

/// The flags are declared in `config`; what they mean to a client is here.
impl ClientOptions {
    /// `--target`, else the address `serve` listens on (`KPI_LISTEN`; an
    /// unspecified address means this machine), else the default.
    pub fn target_url(&self) -> String {
        target_url_for(
            self.target.as_deref(),
            std::env::var("KPI_LISTEN").ok().as_deref(),
        )
    }

    /// `--key`, else the first-start admin key in the data directory.
    pub fn api_key(&self) -> anyhow::Result<String> {
        match &self.key {
            Some(key) => Ok(key.clone()),
            None => admin_key(&self.data_dir),
        }
    }

    /// A connected channel to the target.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let target = self.target_url();
        let mut endpoint =
            Channel::from_shared(target.clone()).context("--target is not a valid URL")?;
        if target.starts_with("https://") {
            let ca = self
                .ca_cert
                .as_ref()
                .context("an https:// target needs --ca-cert (the CA to trust)")?;
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .context("invalid TLS settings")?;
        }
        endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach kpi-service at {target}"))
    }
}

/// An interceptor that sends `authorization: Bearer <key>`.
pub fn bearer(
    key: &str,
) -> anyhow::Result<
    impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone + use<>,
> {
    let value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = format!("Bearer {key}")
        .parse()
        .map_err(|_| anyhow::anyhow!("the API key is not a valid header value"))?;
    Ok(move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", value.clone());
        Ok(request)
    })
}

fn admin_key(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin.key");
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("no --key given and cannot read {}", path.display()))?
        .trim()
        .to_owned())
}

fn target_url_for(target: Option<&str>, listen: Option<&str>) -> String {
    if let Some(target) = target {
        return target.to_owned();
    }
    match listen.and_then(|raw| raw.parse::<SocketAddr>().ok()) {
        Some(mut addr) => {
            if addr.ip().is_unspecified() {
                addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
            format!("http://{addr}")
        }
        None => "http://127.0.0.1:50051".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_follow_the_servers_listen_address_unless_given_a_target() {
        assert_eq!(target_url_for(None, None), "http://127.0.0.1:50051");
        assert_eq!(
            target_url_for(None, Some("127.0.0.1:6000")),
            "http://127.0.0.1:6000"
        );
        assert_eq!(
            target_url_for(None, Some("0.0.0.0:7000")),
            "http://127.0.0.1:7000"
        );
        assert_eq!(
            target_url_for(Some("http://10.1.2.3:1"), Some("127.0.0.1:6000")),
            "http://10.1.2.3:1"
        );
    }
}
