use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::issue::Signer;
use super::pem::{Parsed, certificate_blocks, needs_renewal, parse_certificate};
use super::rotation::{DAY, Evaluation, evaluate, verify_serving};
use super::*;

fn subject() -> CertSubject {
    CertSubject {
        dns_names: vec![
            "manager-operator-webhook.mo.svc".into(),
            "manager-operator-webhook.mo.svc.cluster.local".into(),
            "localhost".into(),
        ],
        ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    }
}

fn short() -> CertLifetimes {
    CertLifetimes {
        ca: Duration::from_secs(3600),
        serving: Duration::from_secs(30),
    }
}

fn write(ev: Evaluation) -> (Vec<String>, BTreeMap<String, Vec<u8>>, ServingCert) {
    match ev {
        Evaluation::Write {
            reasons,
            data,
            cert,
        } => (reasons, data, cert),
        Evaluation::Valid(c) => panic!("expected a write, got Valid({c:?})"),
    }
}

fn valid(ev: Evaluation) -> ServingCert {
    match ev {
        Evaluation::Valid(c) => c,
        Evaluation::Write { reasons, .. } => panic!("expected Valid, got a write: {reasons:?}"),
    }
}

fn s(data: &BTreeMap<String, Vec<u8>>, key: &str) -> String {
    String::from_utf8(data[key].clone()).expect("utf-8")
}

#[test]
fn creates_then_keeps() {
    let now = SystemTime::now();
    let (reasons, data, cert) =
        write(evaluate(&BTreeMap::new(), &subject(), CertLifetimes::default(), now).expect("ok"));
    assert!(reasons[0].contains("does not exist"), "{reasons:?}");
    for k in [CA_CERT, CA_KEY, TLS_CERT, TLS_KEY] {
        assert!(data.contains_key(k), "{k}");
    }
    assert_eq!(certificate_blocks(&s(&data, CA_CERT)).len(), 1);
    assert_eq!(
        cert.ca_bundle_pem.as_deref(),
        Some(s(&data, CA_CERT).as_str())
    );
    // Lifetimes: serving about a year, CA about ten.
    let life = cert.not_after.duration_since(now).expect("future");
    assert!(life > DAY * 364 && life <= DAY * 365, "{life:?}");
    let ca = parse_certificate(&s(&data, CA_CERT), "ca").expect("ca parses");
    assert!(ca.is_ca);
    let ca_life = ca.not_after.duration_since(now).expect("future");
    assert!(ca_life > DAY * 3649 && ca_life <= DAY * 3650, "{ca_life:?}");
    assert!(cert.certified_key().is_ok());

    // Re-evaluating later changes nothing.
    let again =
        valid(evaluate(&data, &subject(), CertLifetimes::default(), now + DAY * 30).expect("ok"));
    assert_eq!(again.cert_pem, cert.cert_pem);
    assert_eq!(again.ca_bundle_pem, cert.ca_bundle_pem);
}

#[test]
fn rotates_the_serving_certificate_when_a_third_is_left() {
    let t0 = SystemTime::now();
    let (_, data, first) = write(evaluate(&BTreeMap::new(), &subject(), short(), t0).expect("ok"));
    // 30 s lifetime, back-dated 3 s: 33 s in all, rotated with less than 11 s left (after ~19 s).
    assert!(!first.needs_rotation(t0 + Duration::from_secs(15)));
    valid(evaluate(&data, &subject(), short(), t0 + Duration::from_secs(15)).expect("ok"));
    let (reasons, data2, second) =
        write(evaluate(&data, &subject(), short(), t0 + Duration::from_secs(21)).expect("ok"));
    assert!(
        reasons.iter().any(|r| r.contains("less than a third")),
        "{reasons:?}"
    );
    assert_ne!(second.serial, first.serial);
    assert_eq!(data2[CA_CERT], data[CA_CERT], "the CA is kept");
    assert_eq!(data2[CA_KEY], data[CA_KEY]);
    assert_ne!(data2[TLS_CERT], data[TLS_CERT]);
    valid(evaluate(&data2, &subject(), short(), t0 + Duration::from_secs(22)).expect("ok"));
}

#[test]
fn expired_serving_certificate_is_replaced() {
    let t0 = SystemTime::now();
    let (_, data, _) = write(evaluate(&BTreeMap::new(), &subject(), short(), t0).expect("ok"));
    let (reasons, _, cert) =
        write(evaluate(&data, &subject(), short(), t0 + Duration::from_secs(120)).expect("ok"));
    assert!(!reasons.is_empty());
    assert!(cert.not_after > t0 + Duration::from_secs(120));
}

#[test]
fn ca_rolls_over_keeping_the_old_one_trusted() {
    let lifetimes = CertLifetimes {
        ca: Duration::from_secs(300),
        serving: Duration::from_secs(60),
    };
    let t0 = SystemTime::now();
    let (_, data, first) =
        write(evaluate(&BTreeMap::new(), &subject(), lifetimes, t0).expect("ok"));
    // CA: 330 s in all; a third is 110 s: roll over after ~220 s left... at t0 + 200 s 100 s are left.
    let t1 = t0 + Duration::from_secs(200);
    let (reasons, data2, second) = write(evaluate(&data, &subject(), lifetimes, t1).expect("ok"));
    assert!(
        reasons.iter().any(|r| r.contains("rolling over")),
        "{reasons:?}"
    );
    let bundle = certificate_blocks(&s(&data2, CA_CERT));
    assert_eq!(bundle.len(), 2, "new CA first, old CA kept");
    assert_eq!(bundle[1], s(&data, CA_CERT), "the old CA is second");
    assert_ne!(data2[CA_KEY], data[CA_KEY], "signs with the new CA");
    // The serving certificate of t0 expired by t1 (60 s), so it was re-issued by the new CA.
    assert_ne!(second.serial, first.serial);
    let parsed: Vec<Parsed> = bundle
        .iter()
        .map(|b| parse_certificate(b, "ca").expect("parses"))
        .collect();
    verify_serving(&second.cert_pem, &parsed[..1], &subject(), t1).expect("new CA signed it");
    // A certificate from the old CA still verifies against the new bundle.
    let old_signer = Signer::from_bundle(&parsed[1..], &s(&data, CA_KEY), t1).expect("old CA");
    let old_issued = old_signer
        .issue(&subject(), Duration::from_secs(60), t1)
        .expect("issues");
    verify_serving(&old_issued.cert_pem, &parsed, &subject(), t1).expect("old CA still trusted");
    // And the result is stable.
    valid(evaluate(&data2, &subject(), lifetimes, t1 + Duration::from_secs(1)).expect("ok"));
}

#[test]
fn a_new_name_reissues_the_serving_certificate_only() {
    let now = SystemTime::now();
    let (_, data, _) =
        write(evaluate(&BTreeMap::new(), &subject(), CertLifetimes::default(), now).expect("ok"));
    let mut more = subject();
    more.dns_names.push("webhook.example.com".into());
    let (reasons, data2, cert) =
        write(evaluate(&data, &more, CertLifetimes::default(), now).expect("ok"));
    assert!(reasons[0].contains("webhook.example.com"), "{reasons:?}");
    assert_eq!(data2[CA_KEY], data[CA_KEY]);
    let bundle = vec![parse_certificate(&s(&data, CA_CERT), "ca").expect("ca")];
    verify_serving(&cert.cert_pem, &bundle, &more, now).expect("covers the new name");
}

#[test]
fn broken_parts_are_repaired() {
    let now = SystemTime::now();
    let (_, data, _) =
        write(evaluate(&BTreeMap::new(), &subject(), CertLifetimes::default(), now).expect("ok"));
    let (_, other, _) =
        write(evaluate(&BTreeMap::new(), &subject(), CertLifetimes::default(), now).expect("ok"));

    // A CA key from another CA: a new CA.
    let mut mixed = data.clone();
    mixed.insert(CA_KEY.into(), other[CA_KEY].clone());
    let (reasons, fixed, cert) =
        write(evaluate(&mixed, &subject(), CertLifetimes::default(), now).expect("ok"));
    assert!(reasons.iter().any(|r| r.contains("matches")), "{reasons:?}");
    assert_ne!(fixed[CA_CERT], data[CA_CERT]);
    valid(evaluate(&fixed, &subject(), CertLifetimes::default(), now).expect("ok"));
    assert!(cert.certified_key().is_ok());

    // Garbage serving certificate, or a key of another certificate: re-issued, CA kept.
    for (key, value) in [
        (TLS_CERT, b"garbage".to_vec()),
        (TLS_KEY, other[TLS_KEY].clone()),
    ] {
        let mut broken = data.clone();
        broken.insert(key.into(), value);
        let (reasons, fixed, _) =
            write(evaluate(&broken, &subject(), CertLifetimes::default(), now).expect("ok"));
        assert!(!reasons.is_empty());
        assert_eq!(fixed[CA_CERT], data[CA_CERT], "{key}: CA kept");
        valid(evaluate(&fixed, &subject(), CertLifetimes::default(), now).expect("ok"));
    }

    // A serving certificate from another CA: re-issued by ours.
    let mut foreign = data.clone();
    foreign.insert(TLS_CERT.into(), other[TLS_CERT].clone());
    foreign.insert(TLS_KEY.into(), other[TLS_KEY].clone());
    let (reasons, fixed, _) =
        write(evaluate(&foreign, &subject(), CertLifetimes::default(), now).expect("ok"));
    assert!(reasons[0].contains("not valid for"), "{reasons:?}");
    assert_eq!(fixed[CA_CERT], data[CA_CERT]);

    // Missing keys in an existing Secret.
    let mut partial = data.clone();
    partial.remove(CA_KEY);
    let (reasons, _, _) =
        write(evaluate(&partial, &subject(), CertLifetimes::default(), now).expect("ok"));
    assert!(reasons[0].contains("ca.key is missing"), "{reasons:?}");
}

#[test]
fn renewal_threshold() {
    let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let after = t + Duration::from_secs(300);
    assert!(!needs_renewal(t, after, t));
    assert!(!needs_renewal(t, after, t + Duration::from_secs(199)));
    assert!(needs_renewal(t, after, t + Duration::from_secs(201)));
    assert!(needs_renewal(t, after, after + Duration::from_secs(1)));
}

#[test]
fn pem_blocks() {
    let text = "junk\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\nmore\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----";
    let blocks = certificate_blocks(text);
    assert_eq!(blocks.len(), 2);
    assert!(blocks[0].contains("AAA") && blocks[1].contains("BBB"));
    assert!(certificate_blocks("-----BEGIN CERTIFICATE-----\nunterminated").is_empty());
}

#[test]
fn external_files_are_read_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = FileCertSource::new(dir.path());
    let err = src.load().expect_err("no files yet").to_string();
    assert!(err.contains("tls.crt"), "{err}");

    let now = SystemTime::now();
    let (_, data, _) =
        write(evaluate(&BTreeMap::new(), &subject(), CertLifetimes::default(), now).expect("ok"));
    std::fs::write(dir.path().join(TLS_CERT), &data[TLS_CERT]).expect("write");
    std::fs::write(dir.path().join(TLS_KEY), &data[TLS_KEY]).expect("write");
    let (cert, contents) = src.load().expect("loads without ca.crt");
    assert!(cert.ca_bundle_pem.is_none());
    std::fs::write(dir.path().join(CA_CERT), &data[CA_CERT]).expect("write");
    let (cert, contents2) = src.load().expect("loads");
    assert_eq!(
        cert.ca_bundle_pem.as_deref(),
        Some(s(&data, CA_CERT).as_str())
    );
    assert_ne!(contents, contents2, "a change is visible");
    assert_eq!(src.contents().expect("reads"), contents2, "no change");

    let (_, other, _) =
        write(evaluate(&BTreeMap::new(), &subject(), CertLifetimes::default(), now).expect("ok"));
    std::fs::write(dir.path().join(TLS_KEY), &other[TLS_KEY]).expect("write");
    let err = src.load().expect_err("mismatched key").to_string();
    assert!(err.contains("not a usable private key"), "{err}");
    std::fs::write(dir.path().join(TLS_KEY), b"nonsense").expect("write");
    let err = src.load().expect_err("garbage key").to_string();
    assert!(err.contains("no PEM private key"), "{err}");
}
