//! Configuration parsing and validation on arbitrary input.
//!
//! Beyond "no panic, no hang" (libFuzzer's `-timeout` turns a slow input into a failure), every
//! configuration that validation accepts must keep the promises the rest of corral relies on:
//! names that are safe as path components and in one-line reports, CPU lists that are sorted,
//! distinct and online, and a validation that answers the same twice.

#![no_main]

use corral::RuntimeConfig;
use corral_actors::config::MAX_NAME_LEN;
use libfuzzer_sys::fuzz_target;

/// The CPUs the target pretends are online: the validation must not read the machine's.
const ONLINE: [u32; 4] = [0, 1, 2, 3];

fn assert_name(what: &str, name: &str) {
    assert!(
        !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "validation accepted {what} {name:?}"
    );
}

fn assert_cpus(what: &str, cpus: &[u32]) {
    assert!(
        cpus.windows(2).all(|w| w[0] < w[1]),
        "{what} CPUs not sorted and distinct: {cpus:?}"
    );
    assert!(
        cpus.iter().all(|c| ONLINE.contains(c)),
        "{what} CPUs {cpus:?} not all online ({ONLINE:?})"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match RuntimeConfig::from_toml_str(text) {
        Ok(config) => config,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an empty syntax error");
            return;
        }
    };
    let first = config.validate_against(&ONLINE);
    let second = config.validate_against(&ONLINE);
    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.groups, b.groups, "validation answered two group sets");
        }
        (Err(a), Err(b)) => {
            assert_eq!(
                a.to_string(),
                b.to_string(),
                "validation answered two errors"
            );
            assert!(!a.to_string().is_empty(), "an empty validation error");
            return;
        }
        _ => panic!("validation answered once Ok and once Err"),
    }
    let valid = first.expect("matched Ok above");
    assert!(!valid.groups.is_empty(), "validation accepted no group");
    for g in &valid.groups {
        assert_name("group name", &g.name);
        assert!(!g.cpus.is_empty(), "group {} has no CPU", g.name);
        assert_cpus(&format!("group {}", g.name), &g.cpus);
    }
    assert!(!valid.host.cpus.is_empty(), "the host group has no CPU");
    assert_cpus("host", &valid.host.cpus);
    let mut names = std::collections::BTreeSet::new();
    for f in &valid.raw.functions {
        assert_name("function name", &f.name);
        assert!(names.insert(&f.name), "function {} accepted twice", f.name);
    }
    assert_name("cpuset prefix", &valid.raw.enforcement.cpuset_prefix);
    assert!(
        valid.raw.limiter.min <= valid.raw.limiter.initial
            && valid.raw.limiter.initial <= valid.raw.limiter.max,
        "limiter accepted min {} initial {} max {}",
        valid.raw.limiter.min,
        valid.raw.limiter.initial,
        valid.raw.limiter.max
    );
});
