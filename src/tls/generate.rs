//! Certificate generation: a CA and a serving certificate for `certs`, and the in-memory
//! self-signed pair of `serve --dev`; the same CA and serving-certificate parameters are what
//! `rotation` issues for `serve --tls-auto`.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
#[error("certificate generation failed: {0}")]
pub struct CertError(#[from] rcgen::Error);

/// PEM texts of a CA and of a serving certificate it signed.
pub struct Generated {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA's parameters: signs certificates, none below it; valid from an hour before `now` (a
/// node whose clock is behind still accepts it) until `not_after`.
pub(crate) fn ca_params(
    common_name: &str,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - Duration::hours(1);
    params.not_after = not_after;
    Ok(params)
}

/// A serving certificate's parameters for `names` (DNS names or IP addresses), named after
/// the first; valid from an hour before `now` until `not_after`.
pub(crate) fn serving_params(
    names: &[String],
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().map_or("sidecar-injector", String::as_str),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - Duration::hours(1);
    params.not_after = not_after;
    Ok(params)
}

/// A CA (valid 10 years) and a serving certificate for `names` (DNS names or IP addresses,
/// valid 1 year) signed by it.
pub fn generate(names: &[String]) -> Result<Generated, CertError> {
    let now = OffsetDateTime::now_utc();
    let ca_params = ca_params("sidecar-injector CA", now, now + Duration::days(3650))?;
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let key = KeyPair::generate()?;
    let cert = serving_params(names, now, now + Duration::days(365))?.signed_by(&key, &ca)?;
    Ok(Generated {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The `--dev` pair: self-signed for localhost and 127.0.0.1, never written to disk.
pub fn dev_pair() -> Result<(String, String), CertError> {
    let key = KeyPair::generate()?;
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    let now = OffsetDateTime::now_utc();
    let cert = serving_params(&names, now, now + Duration::days(30))?.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem_pairs() {
        let g = generate(&["svc.ns.svc".into(), "127.0.0.1".into()]).unwrap();
        assert!(g.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(g.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(g.key_pem.contains("PRIVATE KEY"));
        let (c, k) = dev_pair().unwrap();
        assert!(c.contains("CERTIFICATE") && k.contains("PRIVATE KEY"));
    }
}
