//! The built-in templates, embedded at compile time. The table is kept in step with
//! `host/templates/` by hand; the unit test below fails when a file is added there but not here
//! (or the other way round), so a template cannot ship half-embedded.

/// Embeds one file of a built-in template.
macro_rules! file {
    ($template:literal, $path:literal) => {
        (
            $path,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/templates/",
                $template,
                "/",
                $path
            )) as &[u8],
        )
    };
}

/// Template name → (relative path, contents).
pub(super) type Builtin = (&'static str, &'static [(&'static str, &'static [u8])]);

/// Every built-in template.
pub(super) const BUILTINS: &[Builtin] = &[
    (
        "blank",
        &[
            file!("blank", ".woodpecker.yaml"),
            file!("blank", "README.md.jinja"),
            file!("blank", "template.toml"),
        ],
    ),
    (
        "node",
        &[
            file!("node", ".gitignore"),
            file!("node", ".woodpecker.yaml.jinja"),
            file!("node", "package.json.jinja"),
            file!("node", "src/index.ts.jinja"),
            file!("node", "template.toml"),
            file!("node", "test/index.test.ts.jinja"),
            file!("node", "tsconfig.json"),
        ],
    ),
    (
        "python",
        &[
            file!("python", ".gitignore"),
            file!("python", ".woodpecker.yaml.jinja"),
            file!("python", "pyproject.toml.jinja"),
            file!("python", "src/{{ package }}/__init__.py.jinja"),
            file!("python", "template.toml"),
            file!("python", "tests/test_greeting.py.jinja"),
        ],
    ),
    (
        "rust",
        &[
            file!("rust", ".gitignore"),
            file!("rust", ".woodpecker.yaml.jinja"),
            file!("rust", "Cargo.toml.jinja"),
            file!("rust", "README.md.jinja"),
            file!("rust", "src/main.rs.jinja"),
            file!("rust", "template.toml"),
        ],
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    fn on_disk(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("read templates dir") {
            let entry = entry.expect("entry");
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().expect("file type").is_dir() {
                on_disk(&entry.path(), &format!("{name}/"), out);
            } else {
                out.insert(name);
            }
        }
    }

    #[test]
    fn the_table_lists_every_file_on_disk() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let mut disk = BTreeSet::new();
        on_disk(&root, "", &mut disk);
        let table: BTreeSet<String> = super::BUILTINS
            .iter()
            .flat_map(|(name, files)| files.iter().map(move |(path, _)| format!("{name}/{path}")))
            .collect();
        assert_eq!(table, disk);
    }
}
