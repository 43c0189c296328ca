//! Every shipped retriever config parses (unknown keys are refused) and names assets that exist.

use ragtune_retriever_train::train::RetrieverConfig;

#[test]
fn shipped_retriever_configs_parse() {
    let root = ragtune_testkit::root();
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("retriever") && name.ends_with(".toml")) {
            continue;
        }
        let config = RetrieverConfig::from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            root.join(&config.model.base).exists(),
            "{name}: model.base {} is missing",
            config.model.base.display()
        );
        seen += 1;
    }
    assert!(seen >= 2, "{seen} retriever configs");
}
