//! The default key derivation is strong and works end to end.

use crate::common::*;

#[test]
fn default_kdf_parameters_work() {
    let t = TestRepo::uninitialised();
    t.init(&[]);
    let keys = walk_files(&t.repo.join("keys"));
    assert_eq!(keys.len(), 1, "one key file after init");
    let key: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&keys[0].1).unwrap()).expect("key file is JSON");
    let params = &key["kdf_params"];
    assert_eq!(key["kdf"], "argon2id", "{key}");
    assert!(
        params["memory_kib"].as_u64().is_some_and(|m| m >= 65536),
        "memory_kib too low: {key}"
    );
    assert!(
        params["iterations"].as_u64().is_some_and(|i| i >= 3),
        "iterations too low: {key}"
    );
    let text = String::from_utf8(std::fs::read(&keys[0].1).unwrap()).unwrap();
    assert!(
        !text.contains(PASSWORD),
        "the key file contains the password"
    );

    let src = t.path("src");
    std::fs::write(src.join("a.txt"), b"strong key\n").unwrap();
    std::fs::write(src.join("b.sql"), sql_bytes(3, 300_000)).unwrap();
    t.backup_json(&[&src]);
    let target = t.restore(&format!("latest:{}", path_str(&src)), "restored");
    assert_trees_equal(&src, &target);
}
