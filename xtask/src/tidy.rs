//! Architecture invariants from ARCHITECTURE.md, checked against the crates' manifests.

use std::collections::BTreeMap;
use std::path::Path;

/// `crate -> internal (iem-*) normal dependencies`, read from each manifest's
/// `[dependencies]` table.
fn internal_deps() -> BTreeMap<String, Vec<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let mut deps = Vec::new();
        let mut in_deps = false;
        let mut package_name = None;
        for line in manifest.lines() {
            let l = line.trim();
            if l.starts_with('[') {
                in_deps = l == "[dependencies]";
                continue;
            }
            if package_name.is_none() && l.starts_with("name = ") {
                package_name = Some(l.trim_start_matches("name = ").trim_matches('"').to_string());
            }
            if in_deps && l.starts_with("iem-") {
                deps.push(l.split(['.', ' ', '=']).next().unwrap().to_string());
            }
        }
        assert_eq!(
            package_name.as_deref(),
            Some(name.as_str()),
            "folder {name} must be named as its package"
        );
        out.insert(name, deps);
    }
    out
}

#[test]
fn dependency_direction() {
    let deps = internal_deps();
    let allowed: &[(&str, &[&str])] = &[
        ("iem-simd", &[]),
        ("iem-tensor", &["iem-simd"]),
        ("iem-activations", &["iem-simd", "iem-tensor"]),
        ("iem-losses", &["iem-simd", "iem-tensor", "iem-activations"]),
        ("iem-metrics", &["iem-simd", "iem-tensor"]),
        ("iem-data", &["iem-tensor"]),
        ("iem-train", &["iem-simd", "iem-tensor", "iem-activations", "iem-losses"]),
        (
            "iem-spec",
            &[
                "iem-simd",
                "iem-tensor",
                "iem-activations",
                "iem-losses",
                "iem-metrics",
                "iem-train",
                "iem-data",
            ],
        ),
    ];
    for (krate, ds) in &deps {
        let allow = allowed
            .iter()
            .find(|(k, _)| k == krate)
            .unwrap_or_else(|| panic!("crate {krate} has no entry in the architecture table"))
            .1;
        for d in ds {
            assert!(
                allow.contains(&d.as_str()),
                "Architecture invariant broken: {krate} depends on {d}"
            );
        }
    }
}
