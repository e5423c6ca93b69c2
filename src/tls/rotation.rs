//! Self-managed TLS, the pure part: the material kept in one Secret (CAs, the current CA's
//! key, the serving pair), how it is read and checked, and `plan`, which says what the leader
//! does next from what it observes. No I/O and no clock: `autotls` is the shell.
//!
//! Rotating the CA never leaves the apiserver with a bundle that misses the certificate being
//! served: a new CA is first added to the Secret as `next` and to the caBundle; only when the
//! bundle has held it for the grace period is the serving certificate reissued from it; the
//! old CA is dropped only when every replica has served the new certificate for the grace
//! period.

use std::collections::BTreeMap;
use std::time::Duration;

use rcgen::{CertifiedIssuer, Issuer, KeyPair};
use time::OffsetDateTime;

use crate::tls::generate::{ca_params, serving_params, CertError};

/// The Secret's type: `tls.crt`/`tls.key` as every tool expects, plus our keys.
pub const SECRET_TYPE: &str = "kubernetes.io/tls";
const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const NEXT_CRT: &str = "next-ca.crt";
const NEXT_KEY: &str = "next-ca.key";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";

/// Lifetimes and the grace period, from the flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The serving certificate's DNS names (the Service's).
    pub dns: Vec<String>,
    pub ca_validity: Duration,
    pub ca_renew_before: Duration,
    pub cert_validity: Duration,
    pub cert_renew_before: Duration,
    /// How long the bundle must hold a new CA before it signs, and every replica must serve a
    /// new certificate before the old CA goes.
    pub grace: Duration,
}

impl Settings {
    /// Lifetimes that `plan` can keep: a renewal threshold below its validity (else every
    /// reconcile would reissue), and room for a CA rotation's two grace periods.
    pub fn check(&self) -> Result<(), String> {
        if self.cert_renew_before >= self.cert_validity {
            return Err("--cert-renew-before must be less than --cert-validity".into());
        }
        if self.ca_renew_before >= self.ca_validity {
            return Err("--ca-renew-before must be less than --ca-validity".into());
        }
        if self.grace * 2 >= self.ca_renew_before {
            return Err("--ca-renew-before must exceed twice --rotation-grace (a CA rotation takes two grace periods)".into());
        }
        Ok(())
    }
}

/// One CA certificate; `key` only for the CAs that still sign (the current one and `next`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: Option<String>,
    pub not_after: i64,
}

/// What the Secret holds, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// Current (the signer of `tls`) first, then older ones still trusted.
    pub cas: Vec<Ca>,
    /// A CA being introduced: in the bundle, not yet signing.
    pub next: Option<Ca>,
    pub tls_crt: String,
    pub tls_key: String,
    pub tls_not_after: i64,
    pub tls_names: Vec<String>,
    /// The serving certificate's serial number: what replicas report they serve.
    pub serial: String,
    /// Certificates of `ca.crt` left out: not a CA this injector made, or more than a
    /// rotation leaves (never published, never written back).
    pub ignored: usize,
}

/// Why the Secret's contents cannot be used as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("the Secret does not exist")]
    Missing,
    #[error("the Secret has type {0:?}, not {SECRET_TYPE}")]
    WrongType(String),
    #[error("the Secret has no {0}")]
    NoKey(&'static str),
    #[error("{0} is corrupt: {1}")]
    Corrupt(&'static str, String),
    #[error("{0} does not match its certificate")]
    KeyMismatch(&'static str),
    #[error("tls.crt is not signed by the first CA of ca.crt")]
    NotSigned,
    #[error("{0} has expired")]
    Expired(&'static str),
}

struct Parsed {
    not_after: i64,
    serial: String,
    names: Vec<String>,
    der: Vec<u8>,
    /// Subject common name.
    common_name: String,
}

/// How many CAs besides the current one a rotation leaves trusted: the one it replaced.
const MAX_OLDER_CAS: usize = 1;
/// The subject of every CA this injector makes starts with it (see `new_ca`).
const CA_NAME_PREFIX: &str = "sidecar-injector CA";

/// Whether an older CA in `ca.crt` is one this injector made and still trusts: named as ours,
/// self-signed with CA constraints (as `new_ca` makes them), not expired.
fn older_ca_we_made(ca: &Parsed, now: i64) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&ca.der) else {
        return false;
    };
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    ca.common_name.starts_with(CA_NAME_PREFIX)
        && is_ca
        && ca.not_after > now
        && cert.verify_signature(None).is_ok()
}

fn parse_cert(what: &'static str, pem: &str) -> Result<Parsed, Unusable> {
    let corrupt = |e: String| Unusable::Corrupt(what, e);
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| corrupt(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| corrupt(e.to_string()))?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok(Parsed {
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string(),
        names,
        der: pem.contents.clone(),
        common_name,
    })
}

/// Every certificate of a PEM bundle, as PEM texts.
fn split_pems(what: &'static str, text: &str) -> Result<Vec<String>, Unusable> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
        let block = block.map_err(|e| Unusable::Corrupt(what, e.to_string()))?;
        out.push(pem_text(&block.contents));
    }
    if out.is_empty() {
        return Err(Unusable::Corrupt(what, "no certificate".into()));
    }
    Ok(out)
}

fn pem_text(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Whether `key_pem` is the private key of `cert_pem`.
fn key_matches(cert_pem: &str, key_pem: &str) -> bool {
    crate::tls::store::load_pair(cert_pem.as_bytes(), key_pem.as_bytes()).is_ok()
}

fn signed_by(leaf_der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok((_, leaf)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(leaf_der),
        x509_parser::parse_x509_certificate(ca_der),
    ) else {
        return false;
    };
    leaf.verify_signature(Some(ca.public_key())).is_ok()
}

impl Material {
    /// Reads and checks a Secret's type and data (`None`: no Secret).
    pub fn from_secret(
        secret: Option<(&str, &BTreeMap<String, Vec<u8>>)>,
        now: i64,
    ) -> Result<Material, Unusable> {
        let (kind, data) = secret.ok_or(Unusable::Missing)?;
        if kind != SECRET_TYPE {
            return Err(Unusable::WrongType(kind.into()));
        }
        let text = |key: &'static str| -> Result<String, Unusable> {
            let bytes = data.get(key).ok_or(Unusable::NoKey(key))?;
            String::from_utf8(bytes.clone()).map_err(|_| Unusable::Corrupt(key, "not UTF-8".into()))
        };
        let ca_pems = split_pems(CA_CRT, &text(CA_CRT)?)?;
        let ca_key = text(CA_KEY)?;
        let mut cas = Vec::new();
        // The current CA's DER, to check that it signed tls.crt.
        let mut signer = Vec::new();
        let mut ignored = 0;
        for (i, pem) in ca_pems.into_iter().enumerate() {
            let parsed = parse_cert(CA_CRT, &pem)?;
            if i == 0 {
                signer = parsed.der.clone();
            } else if cas.len() > MAX_OLDER_CAS || !older_ca_we_made(&parsed, now) {
                // Whoever can write the Secret must not get a CA of theirs into the cluster's
                // caBundle by appending it: only the current CA (its key is in the Secret)
                // and the one it replaced are published.
                ignored += 1;
                continue;
            }
            cas.push(Ca {
                cert_pem: pem,
                key_pem: (i == 0).then(|| ca_key.clone()),
                not_after: parsed.not_after,
            });
        }
        if !key_matches(&cas[0].cert_pem, &ca_key) {
            return Err(Unusable::KeyMismatch(CA_KEY));
        }
        if cas[0].not_after <= now {
            return Err(Unusable::Expired(CA_CRT));
        }
        let next = match data.get(NEXT_CRT) {
            None => None,
            Some(_) => {
                let pem = text(NEXT_CRT)?;
                let key = text(NEXT_KEY)?;
                let parsed = parse_cert(NEXT_CRT, &pem)?;
                if !key_matches(&pem, &key) {
                    return Err(Unusable::KeyMismatch(NEXT_KEY));
                }
                Some(Ca {
                    cert_pem: pem,
                    key_pem: Some(key),
                    not_after: parsed.not_after,
                })
            }
        };
        let tls_crt = text(TLS_CRT)?;
        let tls_key = text(TLS_KEY)?;
        let leaf = parse_cert(TLS_CRT, &tls_crt)?;
        if !key_matches(&tls_crt, &tls_key) {
            return Err(Unusable::KeyMismatch(TLS_KEY));
        }
        if !signed_by(&leaf.der, &signer) {
            return Err(Unusable::NotSigned);
        }
        if leaf.not_after <= now {
            return Err(Unusable::Expired(TLS_CRT));
        }
        Ok(Material {
            cas,
            next,
            tls_crt,
            tls_key,
            tls_not_after: leaf.not_after,
            tls_names: leaf.names,
            serial: leaf.serial,
            ignored,
        })
    }

    /// The Secret's data for this material.
    pub fn to_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        let mut data = BTreeMap::new();
        let cas: String = self.cas.iter().map(|c| c.cert_pem.as_str()).collect();
        data.insert(CA_CRT.into(), cas.into_bytes());
        let key = self.cas[0].key_pem.clone().unwrap_or_default();
        data.insert(CA_KEY.into(), key.into_bytes());
        if let Some(next) = &self.next {
            data.insert(NEXT_CRT.into(), next.cert_pem.clone().into_bytes());
            let key = next.key_pem.clone().unwrap_or_default();
            data.insert(NEXT_KEY.into(), key.into_bytes());
        }
        data.insert(TLS_CRT.into(), self.tls_crt.clone().into_bytes());
        data.insert(TLS_KEY.into(), self.tls_key.clone().into_bytes());
        data
    }

    /// The caBundle this material needs: every CA it trusts, `next` included.
    pub fn bundle(&self) -> String {
        self.cas
            .iter()
            .chain(&self.next)
            .map(|c| c.cert_pem.as_str())
            .collect()
    }

    /// Fresh material: a new CA and a serving certificate from it.
    pub fn generate(settings: &Settings, now: OffsetDateTime) -> Result<Material, CertError> {
        let ca = new_ca(settings, now)?;
        issue(vec![ca], None, settings, now)
    }

    fn reissued(&self, settings: &Settings, now: OffsetDateTime) -> Result<Material, CertError> {
        issue(self.cas.clone(), self.next.clone(), settings, now)
    }
}

fn new_ca(settings: &Settings, now: OffsetDateTime) -> Result<Ca, CertError> {
    // A name of its own, so that two CAs in one bundle are told apart.
    let name = format!("{CA_NAME_PREFIX} {}", now.unix_timestamp_nanos());
    let params = ca_params(&name, now, now + settings.ca_validity)?;
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    Ok(Ca {
        cert_pem: ca.pem(),
        key_pem: Some(ca.key().serialize_pem()),
        not_after: (now + settings.ca_validity).unix_timestamp(),
    })
}

/// A serving certificate from `cas[0]`, valid for the cert validity but never past its CA.
fn issue(
    cas: Vec<Ca>,
    next: Option<Ca>,
    settings: &Settings,
    now: OffsetDateTime,
) -> Result<Material, CertError> {
    let ca = &cas[0];
    let ca_key = KeyPair::from_pem(ca.key_pem.as_deref().unwrap_or_default())?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let not_after = (now + settings.cert_validity)
        .unix_timestamp()
        .min(ca.not_after);
    let not_after_time = OffsetDateTime::from_unix_timestamp(not_after).unwrap_or(now);
    let key = KeyPair::generate()?;
    let cert = serving_params(&settings.dns, now, not_after_time)?.signed_by(&key, &issuer)?;
    let parsed =
        parse_cert(TLS_CRT, &cert.pem()).map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
    Ok(Material {
        cas,
        next,
        tls_crt: cert.pem(),
        tls_key: key.serialize_pem(),
        tls_not_after: not_after,
        tls_names: parsed.names,
        serial: parsed.serial,
        ignored: 0,
    })
}

/// What the leader observes, one reconcile at a time.
pub struct View<'a> {
    pub now: OffsetDateTime,
    /// The Secret's material, or why it cannot be used.
    pub secret: &'a Result<Material, Unusable>,
    /// The last good material this process loaded: restored if the Secret is lost.
    pub fallback: Option<&'a Material>,
    /// The caBundle of every webhook of the configuration (`None`: it does not exist).
    pub bundles: Option<&'a [String]>,
    /// How long the bundle has been what the Secret needs.
    pub bundle_settled: Duration,
    /// How long every live replica has reported serving the Secret's certificate.
    pub serving_settled: Duration,
}

/// Why the leader writes the Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Restored,
    Generated,
    CaAdded,
    CaSwitched,
    CaDropped,
    Renewed,
    Reissued,
}

impl Change {
    pub const ALL: [Change; 7] = [
        Change::Restored,
        Change::Generated,
        Change::CaAdded,
        Change::CaSwitched,
        Change::CaDropped,
        Change::Renewed,
        Change::Reissued,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Restored => "restored",
            Change::Generated => "generated",
            Change::CaAdded => "ca-added",
            Change::CaSwitched => "ca-switched",
            Change::CaDropped => "ca-dropped",
            Change::Renewed => "renewed",
            Change::Reissued => "reissued",
        }
    }

    /// For the log.
    pub fn describe(self) -> &'static str {
        match self {
            Change::Restored => "restored the material this replica serves",
            Change::Generated => "generated a new CA and serving certificate",
            Change::CaAdded => "added a new CA to the bundle (rotation)",
            Change::CaSwitched => "reissued the serving certificate from the new CA",
            Change::CaDropped => "dropped the old CA",
            Change::Renewed => "renewed the serving certificate",
            Change::Reissued => "reissued the serving certificate for the Service's names",
        }
    }
}

/// The leader's next step.
#[derive(Debug)]
pub enum Step {
    /// Write this to the Secret.
    Write(Box<Material>, Change),
    /// Set every webhook's caBundle to this.
    Bundle(String),
    /// Nothing to do until time passes (the words say for what).
    Wait(&'static str),
    Idle,
}

fn secs_left(until: i64, now: OffsetDateTime) -> i64 {
    until - now.unix_timestamp()
}

/// What the leader does next.
pub fn plan(view: &View, settings: &Settings) -> Result<Step, CertError> {
    let now = view.now;
    let m = match view.secret {
        Ok(m) => m,
        Err(_) => {
            // The material every replica still serves keeps the apiserver's bundle valid:
            // put it back rather than start over with a CA the bundle does not have.
            return Ok(match view.fallback {
                Some(f)
                    if secs_left(f.tls_not_after, now) > 0
                        && secs_left(f.cas[0].not_after, now) > 0 =>
                {
                    Step::Write(Box::new(f.clone()), Change::Restored)
                }
                _ => Step::Write(
                    Box::new(Material::generate(settings, now)?),
                    Change::Generated,
                ),
            });
        }
    };
    // An older CA goes once every replica has served the current certificate for the grace
    // period; checked before the bundle is published, so that a CA appended to the Secret
    // while nothing needs an older one is dropped rather than published.
    if m.next.is_none() && m.cas.len() > 1 && view.serving_settled >= settings.grace {
        let mut dropped = m.clone();
        dropped.cas.truncate(1);
        return Ok(Step::Write(Box::new(dropped), Change::CaDropped));
    }
    let bundle = m.bundle();
    if view.bundles.is_some_and(|b| b.iter().any(|b| *b != bundle)) {
        return Ok(Step::Bundle(bundle));
    }
    if let Some(next) = &m.next {
        if view.bundles.is_none() || view.bundle_settled < settings.grace {
            return Ok(Step::Wait("the new CA to settle in the caBundle"));
        }
        let mut cas = vec![next.clone()];
        cas.extend(m.cas.iter().map(|c| Ca {
            key_pem: None,
            ..c.clone()
        }));
        let switched = issue(cas, None, settings, now)?;
        return Ok(Step::Write(Box::new(switched), Change::CaSwitched));
    }
    if m.cas.len() > 1 {
        return Ok(Step::Wait("every replica to serve the new certificate"));
    }
    let renew_before = |d: Duration| d.as_secs() as i64;
    if secs_left(m.cas[0].not_after, now) < renew_before(settings.ca_renew_before) {
        let mut rotating = m.clone();
        rotating.next = Some(new_ca(settings, now)?);
        return Ok(Step::Write(Box::new(rotating), Change::CaAdded));
    }
    let names_differ = {
        let (mut a, mut b) = (m.tls_names.clone(), settings.dns.clone());
        a.sort();
        b.sort();
        a != b
    };
    // A reissue that cannot outlive the CA waits for the CA's rotation instead.
    let due = secs_left(m.tls_not_after, now) < renew_before(settings.cert_renew_before)
        && m.cas[0].not_after > m.tls_not_after;
    if due || names_differ {
        let why = if due {
            Change::Renewed
        } else {
            Change::Reissued
        };
        return Ok(Step::Write(Box::new(m.reissued(settings, now)?), why));
    }
    Ok(Step::Idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            dns: vec!["svc.ns.svc".into(), "svc.ns".into()],
            ca_validity: Duration::from_secs(1000),
            ca_renew_before: Duration::from_secs(300),
            cert_validity: Duration::from_secs(400),
            cert_renew_before: Duration::from_secs(100),
            grace: Duration::from_secs(10),
        }
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap()
    }

    fn at(s: i64) -> OffsetDateTime {
        t0() + time::Duration::seconds(s)
    }

    fn view<'a>(
        now: OffsetDateTime,
        secret: &'a Result<Material, Unusable>,
        bundles: Option<&'a [String]>,
    ) -> View<'a> {
        View {
            now,
            secret,
            fallback: None,
            bundles,
            bundle_settled: Duration::from_secs(3600),
            serving_settled: Duration::from_secs(3600),
        }
    }

    fn roundtrip(m: &Material, now: OffsetDateTime) -> Result<Material, Unusable> {
        Material::from_secret(
            Some((SECRET_TYPE, &m.to_secret_data())),
            now.unix_timestamp(),
        )
    }

    fn written(step: Step) -> Material {
        match step {
            Step::Write(m, _) => *m,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn lifetimes_that_would_loop_or_not_fit_a_rotation_are_refused() {
        assert_eq!(settings().check(), Ok(()));
        let with = |f: fn(&mut Settings)| {
            let mut s = settings();
            f(&mut s);
            s.check()
        };
        assert!(with(|s| s.cert_renew_before = s.cert_validity).is_err());
        assert!(with(|s| s.ca_renew_before = s.ca_validity).is_err());
        assert!(with(|s| s.grace = s.ca_renew_before / 2).is_err());
    }

    #[test]
    fn generated_material_reads_back_and_chains() {
        let s = settings();
        let m = Material::generate(&s, t0()).unwrap();
        assert_eq!(roundtrip(&m, t0()).unwrap(), m);
        assert_eq!(m.cas.len(), 1);
        let mut names = m.tls_names.clone();
        names.sort();
        assert_eq!(names, ["svc.ns", "svc.ns.svc"]);
        assert_eq!(m.tls_not_after, at(400).unix_timestamp());
        assert_eq!(m.cas[0].not_after, at(1000).unix_timestamp());
        assert_eq!(m.bundle(), m.cas[0].cert_pem);
    }

    #[test]
    fn every_kind_of_bad_secret_is_named() {
        let s = settings();
        let m = Material::generate(&s, t0()).unwrap();
        let other = Material::generate(&s, t0()).unwrap();
        let data = m.to_secret_data();
        let read = |kind: &str, data: &BTreeMap<String, Vec<u8>>| {
            Material::from_secret(Some((kind, data)), t0().unix_timestamp())
        };
        assert_eq!(Material::from_secret(None, 0), Err(Unusable::Missing));
        assert_eq!(
            read("Opaque", &data),
            Err(Unusable::WrongType("Opaque".into()))
        );
        let mut d = data.clone();
        d.remove(TLS_KEY);
        assert_eq!(read(SECRET_TYPE, &d), Err(Unusable::NoKey(TLS_KEY)));
        let mut d = data.clone();
        d.insert(CA_CRT.into(), b"garbage".to_vec());
        assert!(matches!(
            read(SECRET_TYPE, &d),
            Err(Unusable::Corrupt(CA_CRT, _))
        ));
        let mut d = data.clone();
        d.insert(TLS_KEY.into(), other.tls_key.clone().into_bytes());
        assert_eq!(read(SECRET_TYPE, &d), Err(Unusable::KeyMismatch(TLS_KEY)));
        let mut d = data.clone();
        d.insert(TLS_CRT.into(), other.tls_crt.clone().into_bytes());
        d.insert(TLS_KEY.into(), other.tls_key.clone().into_bytes());
        assert_eq!(read(SECRET_TYPE, &d), Err(Unusable::NotSigned));
        assert_eq!(
            Material::from_secret(Some((SECRET_TYPE, &data)), at(401).unix_timestamp()),
            Err(Unusable::Expired(TLS_CRT))
        );
    }

    #[test]
    fn only_cas_this_injector_made_reach_the_bundle() {
        let s = settings();
        let m = Material::generate(&s, t0()).unwrap();
        let older = Material::generate(&s, t0()).unwrap().cas[0]
            .cert_pem
            .clone();
        let another = Material::generate(&s, t0()).unwrap().cas[0]
            .cert_pem
            .clone();
        let foreign = {
            let params = ca_params("evil CA", t0(), at(1000)).unwrap();
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap())
                .unwrap()
                .pem()
        };
        let expired = {
            let params = ca_params(&format!("{CA_NAME_PREFIX} old"), at(-100), at(-1)).unwrap();
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap())
                .unwrap()
                .pem()
        };
        let read = |appended: &[&str]| {
            let mut data = m.to_secret_data();
            let mut ca = m.cas[0].cert_pem.clone();
            ca.extend(appended.iter().copied());
            data.insert("ca.crt".into(), ca.into_bytes());
            Material::from_secret(Some((SECRET_TYPE, &data)), t0().unix_timestamp()).unwrap()
        };
        // Not ours, not a CA (a serving certificate), expired: left out, counted.
        for appended in [&foreign, &m.tls_crt, &expired] {
            let got = read(&[appended]);
            assert_eq!((got.cas.len(), got.ignored), (1, 1));
            assert_eq!(got.bundle(), m.bundle());
        }
        // The CA a rotation replaced stays trusted; a second one is more than a rotation leaves.
        let got = read(&[&older, &another]);
        assert_eq!((got.cas.len(), got.ignored), (2, 1));
        assert_eq!(got.bundle(), format!("{}{older}", m.cas[0].cert_pem));
        // What is written back holds only what was kept.
        assert_eq!(roundtrip(&got, t0()).unwrap().ignored, 0);
        // A look-alike (named as ours) appended while every replica has long served the
        // current certificate is dropped before any bundle is published.
        let secret = Ok(read(&[&older]));
        let published = [m.bundle()];
        let dropped = match plan(&view(at(1), &secret, Some(&published)), &s).unwrap() {
            Step::Write(w, Change::CaDropped) => *w,
            other => panic!("expected the older CA dropped, got {other:?}"),
        };
        assert_eq!(dropped.bundle(), m.bundle());
    }

    #[test]
    fn a_lost_secret_is_restored_from_memory_else_generated() {
        let s = settings();
        let m = Material::generate(&s, t0()).unwrap();
        let lost = Err(Unusable::Missing);
        let mut v = view(at(10), &lost, None);
        v.fallback = Some(&m);
        assert_eq!(written(plan(&v, &s).unwrap()), m);
        v.fallback = None;
        let fresh = written(plan(&v, &s).unwrap());
        assert_ne!(fresh.cas[0], m.cas[0]);
        // Expired material in memory is not restored.
        let mut v = view(at(500), &lost, None);
        v.fallback = Some(&m);
        assert_ne!(written(plan(&v, &s).unwrap()).cas[0], m.cas[0]);
    }

    #[test]
    fn a_wrong_bundle_is_patched_and_a_missing_configuration_is_left_alone() {
        let s = settings();
        let m = Material::generate(&s, t0()).unwrap();
        let secret = Ok(m.clone());
        let wiped = [String::new(), m.bundle()];
        assert!(
            matches!(plan(&view(at(1), &secret, Some(&wiped)), &s).unwrap(), Step::Bundle(b) if b == m.bundle())
        );
        let good = [m.bundle(), m.bundle()];
        assert!(matches!(
            plan(&view(at(1), &secret, Some(&good)), &s).unwrap(),
            Step::Idle
        ));
        assert!(matches!(
            plan(&view(at(1), &secret, None), &s).unwrap(),
            Step::Idle
        ));
    }

    /// A whole CA rotation, step by step, the bundle always holding the served certificate's CA.
    #[test]
    fn ca_rotation_overlaps_at_every_step() {
        let s = Settings {
            cert_validity: Duration::from_secs(2000),
            ..settings()
        };
        let m0 = Material::generate(&s, t0()).unwrap();
        // 710 s in: the CA has 290 s left (< 300): a new CA is added, not yet signing.
        let now = at(710);
        let secret = Ok(m0.clone());
        let bundle = [m0.bundle()];
        let m1 = written(plan(&view(now, &secret, Some(&bundle)), &s).unwrap());
        assert_eq!(
            (m1.cas.clone(), m1.tls_crt.clone()),
            (m0.cas.clone(), m0.tls_crt.clone())
        );
        let next = m1.next.clone().unwrap();
        assert_eq!(roundtrip(&m1, now).unwrap(), m1);
        // The bundle must take it first.
        let secret = Ok(m1.clone());
        assert!(
            matches!(plan(&view(now, &secret, Some(&bundle)), &s).unwrap(), Step::Bundle(b) if b == m1.bundle())
        );
        let bundle = [m1.bundle()];
        let mut v = view(now, &secret, Some(&bundle));
        v.bundle_settled = Duration::from_secs(5);
        assert!(matches!(plan(&v, &s).unwrap(), Step::Wait(_)));
        v.bundle_settled = Duration::from_secs(10);
        let m2 = written(plan(&v, &s).unwrap());
        assert_eq!(m2.cas[0].cert_pem, next.cert_pem);
        assert_eq!(m2.cas[1].cert_pem, m0.cas[0].cert_pem);
        assert!(m2.next.is_none());
        assert_eq!(roundtrip(&m2, now).unwrap(), m2);
        // Bundle order changes (current first); then wait for every replica.
        let secret = Ok(m2.clone());
        let bundle = [m2.bundle()];
        let mut v = view(now, &secret, Some(&bundle));
        v.serving_settled = Duration::from_secs(9);
        assert!(matches!(plan(&v, &s).unwrap(), Step::Wait(_)));
        v.serving_settled = Duration::from_secs(10);
        let m3 = written(plan(&v, &s).unwrap());
        assert_eq!(m3.cas.len(), 1);
        assert_eq!(m3.tls_crt, m2.tls_crt);
        assert_eq!(roundtrip(&m3, now).unwrap(), m3);
        let secret = Ok(m3.clone());
        let bundle = [m3.bundle()];
        assert!(matches!(
            plan(&view(now, &secret, Some(&bundle)), &s).unwrap(),
            Step::Idle
        ));
    }

    #[test]
    fn the_serving_certificate_is_renewed_within_its_ca() {
        let s = settings();
        let m = Material::generate(&s, t0()).unwrap();
        let secret = Ok(m.clone());
        let bundle = [m.bundle()];
        assert!(matches!(
            plan(&view(at(299), &secret, Some(&bundle)), &s).unwrap(),
            Step::Idle
        ));
        let renewed = written(plan(&view(at(301), &secret, Some(&bundle)), &s).unwrap());
        assert_eq!(renewed.cas, m.cas);
        assert_eq!(renewed.tls_not_after, at(701).unix_timestamp());
        // A renewal capped by its CA is not repeated: the CA's rotation comes first.
        let capped = Ok(written(
            plan(&view(at(650), &Ok(renewed.clone()), Some(&bundle)), &s).unwrap(),
        ));
        assert!(matches!(capped, Ok(ref c) if c.tls_not_after == at(1000).unix_timestamp()));
        assert!(matches!(
            plan(&view(at(660), &capped, Some(&bundle)), &s).unwrap(),
            Step::Idle
        ));
    }
}
