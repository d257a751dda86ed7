//! `cargo xtask api`: the public items of the published crates, written to
//! `api/rabbitkit.txt` and `api/rabbitkit-core.txt`.
//!
//! No nightly rustdoc JSON, no published baseline for cargo-semver-checks:
//! the list is read from the sources with `syn`. Every `pub` item of every
//! file under `src/` (outside `#[cfg(test)]`), one line each, in file
//! order: functions and methods with their signature, structs with their
//! `pub` fields, enums with their variants, traits with their items, the
//! trait impls of the crate's `pub` types, `pub use` re-exports, consts,
//! statics, type aliases, `#[macro_export]` macros. A `pub` item of a
//! private module that nothing re-exports is listed too (the list is what
//! the sources declare public, not what rustdoc shows); that only makes the
//! check stricter.
//!
//! A unit test compares the lists with the checked-in files, so a change
//! of the public API fails `cargo test -p xtask` until the files are
//! regenerated (`cargo xtask api`) and the change is written in
//! CHANGELOG.md: an API change is a decision, not an accident.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use quote::ToTokens;
use syn::{Attribute, ImplItem, Item, TraitItem, Visibility};

use crate::Result;

/// The published crates: (package name, directory under the workspace root).
pub(crate) const CRATES: [(&str, &str); 2] = [
    ("rabbitkit-core", "crates/rabbitkit-core"),
    ("rabbitkit", "crates/rabbitkit"),
];

/// Where `cargo xtask api` writes the list of `package`.
pub(crate) fn list_path(root: &Path, package: &str) -> PathBuf {
    root.join("api").join(format!("{package}.txt"))
}

/// `cargo xtask api`: writes the lists, says which changed.
pub(crate) fn write(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root.join("api"))
        .map_err(|e| format!("cannot create {}: {e}", root.join("api").display()))?;
    for (package, dir) in CRATES {
        let list = public_api(package, &root.join(dir))?;
        let path = list_path(root, package);
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if old == list {
            eprintln!("xtask: {} unchanged", path.display());
        } else {
            std::fs::write(&path, &list)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!(
                "xtask: {} written ({} items); an API change: say it in CHANGELOG.md",
                path.display(),
                list.lines().filter(|l| !l.starts_with('#')).count()
            );
        }
    }
    Ok(())
}

/// The list of one crate, as written to `api/<package>.txt`.
pub(crate) fn public_api(package: &str, crate_dir: &Path) -> Result<String> {
    let src = crate_dir.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files)?;
    files.sort();
    let mut parsed = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let ast = syn::parse_file(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        let name = file
            .strip_prefix(crate_dir)
            .unwrap_or(file)
            .to_string_lossy()
            .replace('\\', "/");
        parsed.push((name, ast));
    }
    // The names of the crate's pub types and traits: their trait impls are
    // listed, other types' are not.
    let mut public_types = BTreeSet::new();
    for (_, ast) in &parsed {
        collect_public_types(&ast.items, &mut public_types);
    }
    let mut out = format!(
        "# The public items of {package}, from its sources (`cargo xtask api`).\n\
         # A change here is a change of the public API: say it in CHANGELOG.md.\n"
    );
    for (name, ast) in &parsed {
        let lister = Lister {
            file: name,
            public_types: &public_types,
        };
        let mut lines = Vec::new();
        lister.items(&ast.items, "", &mut lines);
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
    }
    Ok(out)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn is_pub(vis: &Visibility) -> bool {
    matches!(vis, Visibility::Public(_))
}

fn is_test_only(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && {
            let tokens = a.meta.to_token_stream().to_string();
            tokens.replace(' ', "") == "cfg(test)"
        }
    })
}

/// The attributes that are part of an item's API, written before it:
/// `cfg`, `non_exhaustive`, `deprecated`, `doc(hidden)`, `must_use`.
fn api_attrs(attrs: &[Attribute]) -> String {
    let mut out = String::new();
    for a in attrs {
        let path = a.path();
        let keep = path.is_ident("cfg")
            || path.is_ident("derive")
            || path.is_ident("non_exhaustive")
            || path.is_ident("deprecated")
            || (path.is_ident("doc") && tidy(&a.meta.to_token_stream()) == "doc(hidden)");
        if keep {
            out.push_str(&format!("#[{}] ", tidy(&a.meta.to_token_stream())));
        }
    }
    out
}

fn collect_public_types(items: &[Item], out: &mut BTreeSet<String>) {
    for item in items {
        match item {
            Item::Struct(i) if is_pub(&i.vis) => {
                out.insert(i.ident.to_string());
            }
            Item::Enum(i) if is_pub(&i.vis) => {
                out.insert(i.ident.to_string());
            }
            Item::Trait(i) if is_pub(&i.vis) => {
                out.insert(i.ident.to_string());
            }
            Item::Type(i) if is_pub(&i.vis) => {
                out.insert(i.ident.to_string());
            }
            Item::Union(i) if is_pub(&i.vis) => {
                out.insert(i.ident.to_string());
            }
            Item::Mod(m) if !is_test_only(&m.attrs) => {
                if let Some((_, inner)) = &m.content {
                    collect_public_types(inner, out);
                }
            }
            _ => {}
        }
    }
}

struct Lister<'a> {
    file: &'a str,
    public_types: &'a BTreeSet<String>,
}

impl Lister<'_> {
    fn items(&self, items: &[Item], module: &str, out: &mut Vec<String>) {
        for item in items {
            self.item(item, module, out);
        }
    }

    fn line(&self, module: &str, text: String, out: &mut Vec<String>) {
        let place = if module.is_empty() {
            self.file.to_string()
        } else {
            format!("{} {module}", self.file)
        };
        out.push(format!("{place}: {text}"));
    }

    fn item(&self, item: &Item, module: &str, out: &mut Vec<String>) {
        match item {
            Item::Fn(i) if is_pub(&i.vis) && !is_test_only(&i.attrs) => {
                let text = format!("{}pub {}", api_attrs(&i.attrs), tidy(&i.sig));
                self.line(module, text, out);
            }
            Item::Struct(i) if is_pub(&i.vis) && !is_test_only(&i.attrs) => {
                let where_clause = tidy_opt(&i.generics.where_clause);
                let text = format!(
                    "{}pub struct {}{}{}",
                    api_attrs(&i.attrs),
                    i.ident,
                    tidy(&i.generics),
                    where_clause
                );
                self.line(module, text, out);
                for (n, field) in i.fields.iter().enumerate() {
                    if is_pub(&field.vis) && !is_test_only(&field.attrs) {
                        let name = field
                            .ident
                            .as_ref()
                            .map_or_else(|| n.to_string(), ToString::to_string);
                        let text = format!(
                            "{}pub {}.{name}: {}",
                            api_attrs(&field.attrs),
                            i.ident,
                            tidy(&field.ty)
                        );
                        self.line(module, text, out);
                    }
                }
            }
            Item::Enum(i) if is_pub(&i.vis) && !is_test_only(&i.attrs) => {
                let text = format!(
                    "{}pub enum {}{}{}",
                    api_attrs(&i.attrs),
                    i.ident,
                    tidy(&i.generics),
                    tidy_opt(&i.generics.where_clause)
                );
                self.line(module, text, out);
                for variant in &i.variants {
                    let mut v = variant.clone();
                    v.attrs.clear();
                    for field in v.fields.iter_mut() {
                        field.attrs.clear();
                    }
                    let text = format!("{}{}::{}", api_attrs(&variant.attrs), i.ident, tidy(&v));
                    self.line(module, text, out);
                }
            }
            Item::Union(i) if is_pub(&i.vis) && !is_test_only(&i.attrs) => {
                let text = format!("{}pub union {}", api_attrs(&i.attrs), i.ident);
                self.line(module, text, out);
            }
            Item::Trait(i) if is_pub(&i.vis) && !is_test_only(&i.attrs) => {
                let supertraits = if i.supertraits.is_empty() {
                    String::new()
                } else {
                    format!(": {}", tidy(&i.supertraits))
                };
                let text = format!(
                    "{}pub {}{}trait {}{}{supertraits}{}",
                    api_attrs(&i.attrs),
                    if i.unsafety.is_some() { "unsafe " } else { "" },
                    if i.auto_token.is_some() { "auto " } else { "" },
                    i.ident,
                    tidy(&i.generics),
                    tidy_opt(&i.generics.where_clause)
                );
                self.line(module, text, out);
                for ti in &i.items {
                    let text = match ti {
                        TraitItem::Fn(f) => {
                            let default = if f.default.is_some() {
                                " (provided)"
                            } else {
                                ""
                            };
                            format!("{}{}{default}", api_attrs(&f.attrs), tidy(&f.sig))
                        }
                        TraitItem::Type(t) => {
                            let mut t = t.clone();
                            t.attrs.clear();
                            t.default = None;
                            tidy(&t)
                        }
                        TraitItem::Const(c) => {
                            format!("const {}: {}", c.ident, tidy(&c.ty))
                        }
                        other => tidy(other),
                    };
                    self.line(module, format!("{}::{text}", i.ident), out);
                }
            }
            Item::Impl(i) if !is_test_only(&i.attrs) => {
                let self_name = type_name(&i.self_ty);
                if !self_name.is_some_and(|n| self.public_types.contains(&n)) {
                    return;
                }
                let head = format!(
                    "{}{}impl{} {}{}{}",
                    api_attrs(&i.attrs),
                    if i.unsafety.is_some() { "unsafe " } else { "" },
                    tidy(&i.generics),
                    match &i.trait_ {
                        Some((bang, path, _)) => format!(
                            "{}{} for ",
                            if bang.is_some() { "!" } else { "" },
                            tidy(path)
                        ),
                        None => String::new(),
                    },
                    tidy(&i.self_ty),
                    tidy_opt(&i.generics.where_clause)
                );
                if i.trait_.is_some() {
                    // The impl is the API; its items are the trait's.
                    self.line(module, head, out);
                    return;
                }
                for ii in &i.items {
                    let text = match ii {
                        ImplItem::Fn(f) if is_pub(&f.vis) && !is_test_only(&f.attrs) => {
                            format!("{}pub {}", api_attrs(&f.attrs), tidy(&f.sig))
                        }
                        ImplItem::Const(c) if is_pub(&c.vis) && !is_test_only(&c.attrs) => {
                            format!(
                                "{}pub const {}: {}",
                                api_attrs(&c.attrs),
                                c.ident,
                                tidy(&c.ty)
                            )
                        }
                        ImplItem::Type(t) if is_pub(&t.vis) => {
                            format!("pub type {} = {}", t.ident, tidy(&t.ty))
                        }
                        _ => continue,
                    };
                    let text = text.trim_end_matches(',');
                    self.line(module, format!("{head} {{ {text} }}"), out);
                }
            }
            Item::Const(i) if is_pub(&i.vis) && !is_test_only(&i.attrs) => {
                let text = format!(
                    "{}pub const {}: {}",
                    api_attrs(&i.attrs),
                    i.ident,
                    tidy(&i.ty)
                );
                self.line(module, text, out);
            }
            Item::Static(i) if is_pub(&i.vis) && !is_test_only(&i.attrs) => {
                let text = format!(
                    "{}pub static {}{}: {}",
                    api_attrs(&i.attrs),
                    if matches!(i.mutability, syn::StaticMutability::Mut(_)) {
                        "mut "
                    } else {
                        ""
                    },
                    i.ident,
                    tidy(&i.ty)
                );
                self.line(module, text, out);
            }
            Item::Type(i) if is_pub(&i.vis) && !is_test_only(&i.attrs) => {
                let text = format!(
                    "{}pub type {}{} = {}",
                    api_attrs(&i.attrs),
                    i.ident,
                    tidy(&i.generics),
                    tidy(&i.ty)
                );
                self.line(module, text, out);
            }
            Item::Use(i) if is_pub(&i.vis) && !is_test_only(&i.attrs) => {
                let mut leaves = Vec::new();
                use_leaves(&i.tree, String::new(), &mut leaves);
                for leaf in leaves {
                    let text = format!("{}pub use {leaf}", api_attrs(&i.attrs));
                    self.line(module, text, out);
                }
            }
            Item::Macro(i)
                if i.attrs.iter().any(|a| a.path().is_ident("macro_export"))
                    && !is_test_only(&i.attrs) =>
            {
                let name = i
                    .ident
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string);
                self.line(module, format!("macro_rules! {name}"), out);
            }
            Item::Mod(m) if !is_test_only(&m.attrs) => {
                if is_pub(&m.vis) {
                    let text = format!("{}pub mod {}", api_attrs(&m.attrs), m.ident);
                    self.line(module, text, out);
                }
                if let Some((_, inner)) = &m.content {
                    let path = if module.is_empty() {
                        format!("mod {}", m.ident)
                    } else {
                        format!("{module}::{}", m.ident)
                    };
                    self.items(inner, &path, out);
                }
            }
            _ => {}
        }
    }
}

/// A use tree as one path per name (`a::{B, c::D as E}` gives `a::B` and
/// `a::c::D as E`), in the order written.
fn use_leaves(tree: &syn::UseTree, prefix: String, out: &mut Vec<String>) {
    match tree {
        syn::UseTree::Path(p) => use_leaves(&p.tree, format!("{prefix}{}::", p.ident), out),
        syn::UseTree::Name(n) => out.push(format!("{prefix}{}", n.ident)),
        syn::UseTree::Rename(r) => out.push(format!("{prefix}{} as {}", r.ident, r.rename)),
        syn::UseTree::Glob(_) => out.push(format!("{prefix}*")),
        syn::UseTree::Group(g) => {
            for tree in &g.items {
                use_leaves(tree, prefix.clone(), out);
            }
        }
    }
}

/// The last path segment's name of a type (`Queue` for `crate::Queue<T>`,
/// through references).
fn type_name(ty: &syn::Type) -> Option<String> {
    match ty {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        syn::Type::Reference(r) => type_name(&r.elem),
        syn::Type::Paren(p) => type_name(&p.elem),
        _ => None,
    }
}

fn tidy_opt<T: ToTokens>(node: &Option<T>) -> String {
    // A where clause's trailing comma is rustfmt's, not the API's.
    node.as_ref().map_or_else(String::new, |n| {
        format!(" {}", tidy(n).trim_end_matches(','))
    })
}

/// Tokens as one line, with the spaces `quote` puts around punctuation
/// taken out where rustfmt would not have them (`Vec<Option<T>>`,
/// `&self`, `a: u8`, `f(x, y)`).
fn tidy<T: ToTokens + ?Sized>(node: &T) -> String {
    let mut s = node.to_token_stream().to_string();
    for (from, to) in [
        (" ,", ","),
        (" ;", ";"),
        (" :: ", "::"),
        (":: ", "::"),
        (" : ", ": "),
        (" < ", "<"),
        ("< ", "<"),
        (" <", "<"),
        (" >", ">"),
        ("& ", "&"),
        (" (", "("),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
        (" ?", "?"),
        ("# [", "#["),
        (" !", "!"),
        (",)", ")"),
        (", }", " }"),
        ("=(", "= ("),
    ] {
        s = s.replace(from, to);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .unwrap()
    }

    /// Fails when a public item of rabbitkit or rabbitkit-core changed
    /// without `api/*.txt` being regenerated.
    #[test]
    fn the_checked_in_public_api_lists_are_current() {
        let root = workspace();
        let mut stale = Vec::new();
        for (package, dir) in CRATES {
            let now = public_api(package, &root.join(dir)).unwrap();
            let path = list_path(root, package);
            let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
            if now != checked_in {
                let old: BTreeSet<&str> = checked_in.lines().collect();
                let new: BTreeSet<&str> = now.lines().collect();
                let mut diff = String::new();
                for gone in old.difference(&new).take(20) {
                    let _ = writeln!(diff, "  - {gone}");
                }
                for added in new.difference(&old).take(20) {
                    let _ = writeln!(diff, "  + {added}");
                }
                stale.push(format!("{}:\n{diff}", path.display()));
            }
        }
        assert!(
            stale.is_empty(),
            "the public API changed: run `cargo xtask api` to update api/*.txt, \
             and add a line to CHANGELOG.md (Added/Changed/Removed) if the change \
             is meant.\n{}",
            stale.join("\n")
        );
    }

    #[test]
    fn items_are_listed_with_their_signatures() {
        let src = r#"
            pub struct Queue<T> { pub name: String, inner: u8, _t: T }
            struct Private;
            impl<T: Send> Queue<T> {
                pub async fn send(&self, body: &T) -> Result<(), Vec<Option<T>>> { todo!() }
                fn private(&mut self) {}
            }
            impl<T> Clone for Queue<T> { fn clone(&self) -> Self { todo!() } }
            impl Clone for Private { fn clone(&self) -> Self { Private } }
            #[non_exhaustive]
            pub enum OnError { Drop, Retry(Policy), Park { queue: String } }
            pub use inner::{A, B as C};
            #[cfg(feature = "metrics")]
            pub fn record(n: &mut [u8]) {}
            #[cfg(test)]
            mod tests { pub fn helper() {} }
        "#;
        let ast = syn::parse_file(src).unwrap();
        let mut types = BTreeSet::new();
        collect_public_types(&ast.items, &mut types);
        let lister = Lister {
            file: "src/x.rs",
            public_types: &types,
        };
        let mut lines = Vec::new();
        lister.items(&ast.items, "", &mut lines);
        assert_eq!(
            lines,
            [
                "src/x.rs: pub struct Queue<T>",
                "src/x.rs: pub Queue.name: String",
                "src/x.rs: impl<T: Send> Queue<T> { pub async fn send(&self, body: &T) -> Result<(), Vec<Option<T>>> }",
                "src/x.rs: impl<T> Clone for Queue<T>",
                "src/x.rs: #[non_exhaustive] pub enum OnError",
                "src/x.rs: OnError::Drop",
                "src/x.rs: OnError::Retry(Policy)",
                "src/x.rs: OnError::Park { queue: String }",
                "src/x.rs: pub use inner::A",
                "src/x.rs: pub use inner::B as C",
                "src/x.rs: #[cfg(feature = \"metrics\")] pub fn record(n: &mut [u8])",
            ]
        );
    }
}
