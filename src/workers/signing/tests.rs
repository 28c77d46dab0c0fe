use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use super::*;

/// The known vector of the Standard Webhooks reference libraries ("sign function works" in
/// standard-webhooks/standard-webhooks, libraries/javascript/src/webhook.test.ts).
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SPEC_TIMESTAMP: i64 = 1_614_265_330;
const SPEC_PAYLOAD: &str = r#"{"test": 2432232314}"#;
const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

/// A verifier written from the spec, independent of [`SigningKey::sign`]: accepts when any
/// `v1` entry of the header is the HMAC of one of `keys` (constant-time comparison by
/// `Mac::verify_slice`).
fn verifies(keys: &[&[u8]], id: &str, ts: i64, body: &[u8], header: &str) -> bool {
    let signed = [id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body].concat();
    header.split(' ').any(|entry| {
        let Some(b64) = entry.strip_prefix("v1,") else {
            return false;
        };
        let Ok(sig) = STANDARD.decode(b64) else {
            return false;
        };
        keys.iter().any(|k| {
            let mut mac = Hmac::<Sha256>::new_from_slice(k).expect("any key length");
            mac.update(&signed);
            mac.verify_slice(&sig).is_ok()
        })
    })
}

fn secret(data: &[(&str, &str)]) -> Secret {
    Secret {
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

#[test]
fn signs_the_standard_webhooks_known_vector() {
    let key = SigningKey::parse(SPEC_SECRET.as_bytes()).expect("a valid whsec secret");
    assert_eq!(
        key.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_PAYLOAD.as_bytes()),
        SPEC_SIGNATURE
    );
    // A trailing newline (kubectl --from-file) does not change the key.
    let key2 = SigningKey::parse(format!("{SPEC_SECRET}\n").as_bytes()).expect("valid");
    assert_eq!(key, key2);
}

#[test]
fn raw_keys_are_used_byte_for_byte() {
    let raw = b"0123456789abcdef0123456789abcdef";
    let key = SigningKey::parse(raw).expect("32 raw bytes");
    let sig = key.sign("msg_1", 1, b"{}");
    assert!(verifies(&[raw], "msg_1", 1, b"{}", &sig));
    // The same bytes in whsec form give the same signature.
    let wrapped = format!("whsec_{}", STANDARD.encode(raw));
    let key2 = SigningKey::parse(wrapped.as_bytes()).expect("whsec form");
    assert_eq!(key2.sign("msg_1", 1, b"{}"), sig);
    // Raw keys keep their whitespace: it is part of the key.
    let spaced = SigningKey::parse(b"0123456789abcdef0123456789abcdef\n").expect("33 bytes");
    assert_ne!(spaced, key);
}

#[test]
fn short_and_malformed_keys_are_refused() {
    assert_eq!(
        SigningKey::parse(b"hunter2"),
        Err(KeyError::TooShort(7)),
        "a password is not a key"
    );
    assert_eq!(
        SigningKey::parse(format!("whsec_{}", STANDARD.encode([7u8; 23])).as_bytes()),
        Err(KeyError::TooShort(23))
    );
    assert!(matches!(
        SigningKey::parse(b"whsec_not base64 at all!!!!!!!!!!!!"),
        Err(KeyError::Base64(_))
    ));
    assert_eq!(
        format!("{:?}", SigningKey::parse(SPEC_SECRET.as_bytes()).unwrap()),
        "SigningKey(24 bytes)",
        "Debug never shows key material"
    );
}

#[test]
fn rotation_sends_both_signatures_each_verifying_with_its_own_key() {
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let new_raw = [42u8; 32];
    let new = format!("whsec_{}", STANDARD.encode(new_raw));
    let s = secret(&[("k", &new), ("k.previous", old)]);
    let keys = keys_from(&s, "k").expect("both keys valid");
    assert_eq!(keys.len(), 2);
    let header = keys.signature_header(SPEC_ID, SPEC_TIMESTAMP, SPEC_PAYLOAD.as_bytes());
    let parts: Vec<&str> = header.split(' ').collect();
    assert_eq!(parts.len(), 2, "{header}");
    // The previous key's signature is the known vector: a hook that still has only the old
    // secret keeps verifying during the rotation...
    assert_eq!(parts[1], SPEC_SIGNATURE);
    let old_key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(verifies(
        &[&old_key],
        SPEC_ID,
        SPEC_TIMESTAMP,
        SPEC_PAYLOAD.as_bytes(),
        &header
    ));
    // ...and one that has switched to the new secret verifies too.
    assert!(verifies(
        &[&new_raw],
        SPEC_ID,
        SPEC_TIMESTAMP,
        SPEC_PAYLOAD.as_bytes(),
        &header
    ));
    // A third key verifies nothing; neither does a changed body, id or timestamp.
    assert!(!verifies(
        &[&[1u8; 32]],
        SPEC_ID,
        SPEC_TIMESTAMP,
        SPEC_PAYLOAD.as_bytes(),
        &header
    ));
    assert!(!verifies(
        &[&new_raw],
        SPEC_ID,
        SPEC_TIMESTAMP,
        br#"{"test": 2147483647}"#,
        &header
    ));
    assert!(!verifies(
        &[&new_raw],
        "msg_other",
        SPEC_TIMESTAMP,
        SPEC_PAYLOAD.as_bytes(),
        &header
    ));
    assert!(!verifies(
        &[&new_raw],
        SPEC_ID,
        SPEC_TIMESTAMP + 1,
        SPEC_PAYLOAD.as_bytes(),
        &header
    ));
}

#[test]
fn secret_keys_are_read_with_their_errors() {
    let one = keys_from(&secret(&[("k", SPEC_SECRET)]), "k").expect("one key");
    assert_eq!(one.len(), 1);
    // The same value under .previous is one key, not two identical signatures.
    let same = keys_from(
        &secret(&[("k", SPEC_SECRET), ("k.previous", SPEC_SECRET)]),
        "k",
    )
    .expect("valid");
    assert_eq!(same.len(), 1);
    assert!(matches!(
        keys_from(&secret(&[("other", SPEC_SECRET)]), "k"),
        Err(LoadError::KeyMissing(k)) if k == "k"
    ));
    assert!(matches!(
        keys_from(&secret(&[("k", "short")]), "k"),
        Err(LoadError::BadKey { key, error: KeyError::TooShort(5) }) if key == "k"
    ));
    // A broken previous key is reported, not silently dropped.
    assert!(matches!(
        keys_from(&secret(&[("k", SPEC_SECRET), ("k.previous", "short")]), "k"),
        Err(LoadError::BadKey { key, .. }) if key == "k.previous"
    ));
    let string_data = Secret {
        string_data: Some([("k".to_string(), SPEC_SECRET.to_string())].into()),
        ..Default::default()
    };
    assert_eq!(keys_from(&string_data, "k").expect("stringData"), one);
}

#[test]
fn load_errors_map_to_stable_reasons() {
    let r = SigningSecretRef {
        name: "hook-signing".into(),
        key: "key".into(),
    };
    let f = |e: LoadError| e.failure("w", "team-a", "system:serviceaccount:team-a:sa", &r);
    for e in [
        LoadError::Forbidden("no".into()),
        LoadError::NotFound,
        LoadError::KeyMissing("key".into()),
        LoadError::BadKey {
            key: "key".into(),
            error: KeyError::TooShort(3),
        },
    ] {
        assert!(e.is_permanent());
        let failure = f(e);
        assert_eq!(failure.reason, StartupFailure::SigningSecretUnavailable);
        assert!(failure.message.contains("team-a/hook-signing"), "{failure}");
    }
    assert_eq!(
        f(LoadError::ImpersonationDenied("x".into())).reason,
        StartupFailure::ImpersonationForbidden
    );
    let t = LoadError::Transient("timeout".into());
    assert!(!t.is_permanent());
    assert_eq!(f(t).reason, StartupFailure::ApiUnavailable);
}

#[test]
fn delivery_ids_stay_across_retries_and_change_per_delivery() {
    let ids = DeliveryIds::default();
    let first = ids.for_attempt("ns/a", "10");
    assert!(
        first.starts_with("msg_") && first.len() == 4 + 22,
        "{first}"
    );
    // Retries of the same version (the attempt failed): the same id.
    assert_eq!(ids.for_attempt("ns/a", "10"), first);
    assert_eq!(ids.for_attempt("ns/a", "10"), first);
    // Another object: its own id.
    let other = ids.for_attempt("ns/b", "10");
    assert_ne!(other, first);
    // A new version while failing: a new delivery.
    let second = ids.for_attempt("ns/a", "11");
    assert_ne!(second, first);
    // Delivered: the next call (resync, requeue) is a new delivery even for the same version.
    ids.delivered("ns/a");
    let third = ids.for_attempt("ns/a", "11");
    assert_ne!(third, second);
    // Objects gone from the cache are forgotten.
    ids.retain(|k| k == "ns/a");
    assert_eq!(ids.for_attempt("ns/a", "11"), third);
    assert_ne!(ids.for_attempt("ns/b", "10"), other);
}

#[test]
fn key_cell_reports_rotations_only() {
    let cell = KeyCell::default();
    assert!(cell.get().is_none());
    let a = keys_from(&secret(&[("k", SPEC_SECRET)]), "k").unwrap();
    assert!(cell.set(a.clone()));
    assert!(
        !cell.set(a.clone()),
        "re-reading the same Secret is no rotation"
    );
    let b = keys_from(
        &secret(&[
            ("k", &format!("whsec_{}", STANDARD.encode([9u8; 32]))),
            ("k.previous", SPEC_SECRET),
        ]),
        "k",
    )
    .unwrap();
    assert!(cell.set(b.clone()));
    assert_eq!(*cell.get().unwrap(), b);
}
