//! Checks a component before it is compiled: its top-level imports and exports are read with
//! `wasmparser` (milliseconds, even for a 12 MB JavaScript component) and compared with what
//! the host links for the manifest's ABI. A mismatch is refused with a sentence naming the
//! interface and the fix, instead of after a long Cranelift compile with wasmtime's linker
//! message.
//!
//! What the host provides is not a list kept here: each imported interface name is asked of
//! the very linker the component would be linked with ([`Linkers::provides`]), so a new ABI
//! version or WASI release changes the answer with the linker.

use std::collections::HashMap;
use std::sync::Mutex;

use wasmparser::{
    Chunk, ComponentAlias, ComponentAliasSectionReader, ComponentExportSectionReader,
    ComponentExternalKind, ComponentImportSectionReader, ComponentOuterAliasKind, ComponentType,
    ComponentTypeRef, ComponentTypeSectionReader, Encoding, InstanceTypeDeclaration, Parser,
    Payload, TypeBounds,
};

use super::abi::{self, Linkers};
use super::manifest::AbiVersion;

/// One top-level import or export of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extern {
    pub name: String,
    /// An interface (instance); anything else is a bare function, type or value.
    pub instance: bool,
    /// For an imported interface, one function (else resource) the component needs from it:
    /// what the linker probe asks for.
    pub member: Option<Member>,
}

/// A named item of an imported interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub name: String,
    pub resource: bool,
}

/// The member the probe asks for: a plain function if the interface has one (methods such
/// as `[method]pollable.block` need a resource argument the probe cannot give), else a
/// resource. Plain type exports are not linked, so an interface of only those needs nothing.
fn probe_member(decls: &[InstanceTypeDeclaration<'_>]) -> Option<Member> {
    let exports = decls.iter().filter_map(|d| match d {
        InstanceTypeDeclaration::Export { name, ty } => Some((name.name, ty)),
        _ => None,
    });
    let mut resource = None;
    for (name, ty) in exports {
        match ty {
            ComponentTypeRef::Func(_) if !name.starts_with('[') => {
                return Some(Member {
                    name: name.to_owned(),
                    resource: false,
                });
            }
            ComponentTypeRef::Type(TypeBounds::SubResource) if resource.is_none() => {
                resource = Some(Member {
                    name: name.to_owned(),
                    resource: true,
                });
            }
            _ => {}
        }
    }
    resource
}

/// The top-level imports and exports of a component.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    pub imports: Vec<Extern>,
    pub exports: Vec<Extern>,
}

const MAGIC: &[u8; 4] = b"\0asm";

/// Reads the outer component's import and export sections, skipping nested core modules and
/// components (the bulk of the bytes) without decoding them.
pub(crate) fn read_shape(bytes: &[u8]) -> Result<Shape, String> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err("not a WebAssembly component (bad magic number)".into());
    }
    let mut reader = ShapeReader::default();
    let mut parser = Parser::new(0);
    let mut rest = bytes;
    loop {
        let (consumed, payload) = match parser.parse(rest, true) {
            Ok(Chunk::Parsed { consumed, payload }) => (consumed, payload),
            Ok(Chunk::NeedMoreData(_)) => return Err("the component is truncated".into()),
            Err(e) => return Err(format!("not a valid component: {}", e.message())),
        };
        rest = &rest[consumed..];
        match payload {
            Payload::Version { encoding, .. } if encoding != Encoding::Component => {
                return Err("a core WebAssembly module, not a component: build with \
                            `--target wasm32-wasip2` (or wrap the module with \
                            `wasm-tools component new`)"
                    .into());
            }
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => {
                let len = unchecked_range.len();
                if len > rest.len() {
                    return Err("the component is truncated".into());
                }
                rest = &rest[len..];
            }
            Payload::ComponentTypeSection(section) => reader.types(section)?,
            Payload::ComponentAliasSection(section) => reader.aliases(section)?,
            Payload::ComponentImportSection(section) => reader.imports(section)?,
            Payload::ComponentExportSection(section) => reader.exports(section)?,
            Payload::End(_) => return Ok(reader.shape),
            _ => {}
        }
    }
}

/// What [`read_shape`] has learned so far from the outer component's sections.
#[derive(Default)]
struct ShapeReader {
    shape: Shape,
    /// The component type index space, as far as the probe needs it: an instance type's
    /// probe member, `None` for every other type.
    types: Vec<Option<Member>>,
}

impl ShapeReader {
    fn types(&mut self, section: ComponentTypeSectionReader<'_>) -> Result<(), String> {
        for ty in section {
            let ty = ty.map_err(|e| format!("unreadable type: {}", e.message()))?;
            self.types.push(match ty {
                ComponentType::Instance(decls) => probe_member(&decls),
                _ => None,
            });
        }
        Ok(())
    }

    /// Type aliases take a slot in the type index space; other aliases do not.
    fn aliases(&mut self, section: ComponentAliasSectionReader<'_>) -> Result<(), String> {
        for alias in section {
            let alias = alias.map_err(|e| format!("unreadable alias: {}", e.message()))?;
            let is_type = matches!(
                alias,
                ComponentAlias::InstanceExport {
                    kind: ComponentExternalKind::Type,
                    ..
                } | ComponentAlias::Outer {
                    kind: ComponentOuterAliasKind::Type,
                    ..
                }
            );
            if is_type {
                self.types.push(None);
            }
        }
        Ok(())
    }

    fn imports(&mut self, section: ComponentImportSectionReader<'_>) -> Result<(), String> {
        for import in section {
            let import = import.map_err(|e| format!("unreadable import: {}", e.message()))?;
            let member = match import.ty {
                ComponentTypeRef::Instance(index) => {
                    self.types.get(index as usize).cloned().flatten()
                }
                ComponentTypeRef::Type(_) => {
                    self.types.push(None);
                    None
                }
                _ => None,
            };
            self.shape.imports.push(Extern {
                name: import.name.name.to_owned(),
                instance: matches!(import.ty, ComponentTypeRef::Instance(_)),
                member,
            });
        }
        Ok(())
    }

    fn exports(&mut self, section: ComponentExportSectionReader<'_>) -> Result<(), String> {
        for export in section {
            let export = export.map_err(|e| format!("unreadable export: {}", e.message()))?;
            if export.kind == ComponentExternalKind::Type {
                self.types.push(None);
            }
            self.shape.exports.push(Extern {
                name: export.name.name.to_owned(),
                instance: export.kind == ComponentExternalKind::Instance,
                member: None,
            });
        }
        Ok(())
    }
}

/// Which interface names each ABI's linker provides, learned once per name.
#[derive(Default)]
pub(crate) struct Checker {
    known: Mutex<HashMap<(AbiVersion, String), bool>>,
}

impl Checker {
    /// Refuses a component whose imports the host does not provide or whose exports are not
    /// the provider world of `abi`. The error is a sentence for the plugin's author.
    pub fn verify(
        &self,
        engine: &wasmtime::Engine,
        linkers: &Linkers,
        abi: AbiVersion,
        shape: &Shape,
    ) -> Result<(), String> {
        if !linkers.supports(abi) {
            return Err(format!(
                "ABI version {abi} is not supported by this host (supported: {})",
                supported()
            ));
        }
        check_exports(abi, shape)?;
        let mut missing = Vec::new();
        for import in &shape.imports {
            if !import.instance {
                return Err(format!(
                    "the component imports `{}`, which is not an interface; a provider may \
                     import only the interfaces listed in docs/plugins.md",
                    import.name
                ));
            }
            let Some(member) = &import.member else {
                // Nothing in it is linked (only plain types): nothing to provide.
                continue;
            };
            if !self.provides(engine, linkers, abi, &import.name, member)? {
                missing.push(import.name.as_str());
            }
        }
        match missing.first() {
            None => Ok(()),
            Some(first) => Err(missing_message(abi, first, &missing)),
        }
    }

    fn provides(
        &self,
        engine: &wasmtime::Engine,
        linkers: &Linkers,
        abi: AbiVersion,
        name: &str,
        member: &Member,
    ) -> Result<bool, String> {
        let key = (abi, format!("{name}#{}", member.name));
        if let Some(known) = self.known.lock().ok().and_then(|m| m.get(&key).copied()) {
            return Ok(known);
        }
        let provided = linkers.provides(engine, abi, name, member)?;
        if let Ok(mut known) = self.known.lock() {
            known.insert(key, provided);
        }
        Ok(provided)
    }
}

/// The component must export the provider interface of an ABI compatible with the one its
/// manifest declares.
fn check_exports(abi: AbiVersion, shape: &Shape) -> Result<(), String> {
    let agent = shape
        .exports
        .iter()
        .filter(|e| e.instance)
        .find_map(|e| e.name.strip_prefix(abi::PROVIDER_EXPORT)?.strip_prefix('@'));
    match agent {
        Some(version) if compatible(abi, version) => Ok(()),
        Some(version) => Err(format!(
            "the component was built against rdev:provider@{version} but its manifest says \
             `abi = \"{abi}\"`: set `abi = \"{version}\"` in the manifest (this host supports {})",
            supported()
        )),
        None => {
            let exports: Vec<&str> = shape.exports.iter().map(|e| e.name.as_str()).collect();
            Err(format!(
                "the component does not export `{}@{abi}`, the provider interface (it exports: \
                 {}); build it against the `provider` world of wit/since_v{abi}/ (the rdev-sdk \
                 crate does this), not a command or HTTP world",
                abi::PROVIDER_EXPORT,
                if exports.is_empty() {
                    "nothing".to_owned()
                } else {
                    exports.join(", ")
                }
            ))
        }
    }
}

/// Same major, and for `0.x` the same minor: the rule the linkers dispatch on.
fn compatible(abi: AbiVersion, version: &str) -> bool {
    version
        .parse::<AbiVersion>()
        .is_ok_and(|v| v.major == abi.major && (abi.major != 0 || v.minor == abi.minor))
}

fn supported() -> String {
    abi::SUPPORTED
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The refusal for imports the host lacks: names them all and advises on the first.
fn missing_message(abi: AbiVersion, first: &str, missing: &[&str]) -> String {
    let list = missing
        .iter()
        .map(|m| format!("`{m}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let package = first.split('/').next().unwrap_or(first);
    let package = package.split('@').next().unwrap_or(package);
    let advice = if package == "wasi:http" {
        "this host provides no `wasi:http`: a provider reaches services in its workspace \
         through `rdev:provider/project-http` and has no other network. Build without HTTP \
         (componentize-js: `disableFeatures: ['http', 'fetch-event']`; Rust: drop the \
         `wasi:http` client crate)"
            .to_owned()
    } else if package == "rdev:provider" {
        let version = first.rsplit('@').next().unwrap_or("");
        format!(
            "the component was built against rdev:provider@{version} but its manifest says \
             `abi = \"{abi}\"`: set the manifest's `abi` to the version it was built against \
             (this host supports {})",
            supported()
        )
    } else if first.contains("@0.3") {
        "WASI 0.3 is not provided: build for WASI 0.2 (`--target wasm32-wasip2`)".to_owned()
    } else {
        format!(
            "this host does not provide `{package}`; a provider may import only the rdev \
             interfaces of its ABI and the WASI 0.2 interfaces listed in docs/plugins.md"
        )
    };
    format!("the component imports {list}, which this host does not provide: {advice}")
}

/// A component whose only content is an import of interface `name` requiring one `member`
/// of the wrong shape: a function `func()` or a resource. Linking it against a linker that
/// lacks the interface (or that member) fails with "implementation is missing"; against one
/// that has it, it links or fails on the member's type. It compiles no code.
pub(crate) fn probe_component(name: &str, member: &Member) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + name.len() + member.name.len());
    out.extend_from_slice(MAGIC);
    // Component-model binary version 0x0d, layer 1.
    out.extend_from_slice(&[0x0d, 0x00, 0x01, 0x00]);
    // Type section: one instance type exporting `member`.
    let mut instance = Vec::new();
    if member.resource {
        instance.push(0x01);
    } else {
        // decl 1: the function type `func()`; decl 2 exports it.
        instance.extend_from_slice(&[0x02, 0x01, 0x40, 0x00, 0x01, 0x00]);
    }
    instance.extend_from_slice(&[0x04, 0x00]);
    leb128(&mut instance, member.name.len());
    instance.extend_from_slice(member.name.as_bytes());
    if member.resource {
        // A type export bounded by `(sub resource)`.
        instance.extend_from_slice(&[0x03, 0x01]);
    } else {
        // A function of type 0.
        instance.extend_from_slice(&[0x01, 0x00]);
    }
    let mut types = vec![0x01, 0x42];
    types.extend_from_slice(&instance);
    section(&mut out, 7, &types);
    // Import section: `name` as an instance of type 0.
    let mut import = vec![0x01, 0x00];
    leb128(&mut import, name.len());
    import.extend_from_slice(name.as_bytes());
    import.extend_from_slice(&[0x05, 0x00]);
    section(&mut out, 10, &import);
    out
}

fn section(out: &mut Vec<u8>, id: u8, content: &[u8]) {
    out.push(id);
    leb128(out, content.len());
    out.extend_from_slice(content);
}

fn leb128(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(imports: &[&str], exports: &[&str]) -> Shape {
        let ext = |n: &&str| Extern {
            name: (*n).to_owned(),
            instance: true,
            member: None,
        };
        Shape {
            imports: imports.iter().map(ext).collect(),
            exports: exports.iter().map(ext).collect(),
        }
    }

    #[test]
    fn bad_magic_and_core_modules_are_named_in_words() {
        assert_eq!(
            read_shape(b"not a component").unwrap_err(),
            "not a WebAssembly component (bad magic number)"
        );
        let core = read_shape(b"\0asm\x01\0\0\0").unwrap_err();
        assert!(core.starts_with("a core WebAssembly module"), "{core}");
    }

    #[test]
    fn the_probe_component_is_read_back_with_its_one_import_and_member() {
        for resource in [false, true] {
            let member = Member {
                name: "fields".into(),
                resource,
            };
            let bytes = probe_component("wasi:http/types@0.2.3", &member);
            let shape = read_shape(&bytes).expect("valid component");
            assert_eq!(
                shape.imports,
                [Extern {
                    name: "wasi:http/types@0.2.3".into(),
                    instance: true,
                    member: Some(member),
                }]
            );
            assert!(shape.exports.is_empty());
        }
    }

    #[test]
    fn exports_must_be_the_provider_interface_of_a_compatible_abi() {
        let abi = AbiVersion::new(0, 1, 0);
        assert!(check_exports(abi, &shape(&[], &["rdev:provider/agent@0.1.0"])).is_ok());
        assert!(check_exports(abi, &shape(&[], &["rdev:provider/agent@0.1.4"])).is_ok());
        let newer = check_exports(abi, &shape(&[], &["rdev:provider/agent@0.2.0"])).unwrap_err();
        assert!(newer.contains("set `abi = \"0.2.0\"`"), "{newer}");
        let command = check_exports(abi, &shape(&[], &["wasi:cli/run@0.2.0"])).unwrap_err();
        assert!(
            command.contains("it exports: wasi:cli/run@0.2.0"),
            "{command}"
        );
    }

    #[test]
    fn a_missing_http_import_gets_the_componentize_js_advice() {
        let text = missing_message(
            AbiVersion::new(0, 1, 0),
            "wasi:http/types@0.2.3",
            &["wasi:http/types@0.2.3", "wasi:http/outgoing-handler@0.2.3"],
        );
        assert!(
            text.contains("`wasi:http/outgoing-handler@0.2.3`"),
            "{text}"
        );
        assert!(
            text.contains("disableFeatures: ['http', 'fetch-event']"),
            "{text}"
        );
    }
}
