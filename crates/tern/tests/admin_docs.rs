//! docs/configuration.md lists every setting with its default, and tern.example.toml has every
//! key: both are checked against the defaults `tern check-config` prints.

use tern::config::Config;

/// (section, key, default as TOML) of every setting.
fn settings() -> Vec<(String, String, String)> {
    let text = Config::default().to_toml();
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(s) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, v)) = line.split_once(" = ") {
            out.push((section.clone(), k.to_string(), v.to_string()));
        }
    }
    assert!(out.len() > 20, "{text}");
    out
}

#[test]
fn configuration_md_lists_every_setting_with_its_default() {
    let doc = include_str!("../../../docs/configuration.md");
    for (section, key, default) in settings() {
        let heading = if section.is_empty() {
            "## Top level".to_string()
        } else {
            format!("## `[{section}]`")
        };
        let start = doc
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/configuration.md has no section {heading}"));
        let body = &doc[start + heading.len()..];
        let body = &body[..body.find("\n## ").unwrap_or(body.len())];
        let row = body
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("docs/configuration.md: no row for `{key}` under {heading}"));
        assert!(
            row.contains(&format!("`{default}`")),
            "docs/configuration.md: `{key}` should show its default `{default}`: {row}"
        );
    }
}

#[test]
fn example_config_has_every_key() {
    let example = include_str!("../../../tern.example.toml");
    let parsed: toml::Table = example.parse().unwrap();
    for (section, key, default) in settings() {
        // A list empty by default (extra listeners) may stay commented out in the example.
        if default == "[]" {
            continue;
        }
        let table = if section.is_empty() {
            Some(&parsed)
        } else {
            parsed.get(&section).and_then(|t| t.as_table())
        };
        assert!(
            table.is_some_and(|t| t.contains_key(&key)),
            "tern.example.toml lacks {section}.{key}"
        );
    }
}
