//! Manifest files: `.yaml`/`.yml`/`.json`, multi-document YAML, `kind: List`, as
//! `kubectl get -o yaml` prints them. Services, EndpointSlices, Pods and Namespaces are read;
//! other kinds are ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::cluster::objects::{self, PodObject, ServiceObject, SliceObject};
use crate::cluster::{ClusterState, FieldError};

/// Why a manifest set could not be read. Each names the file, and where it can, the object
/// and the field.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: document {doc}: {message}")]
    Syntax { path: PathBuf, doc: usize, message: String },
    #[error("{path}: {kind} {object}: {field}: {message}")]
    Invalid { path: PathBuf, kind: String, object: String, field: String, message: String },
    #[error("{path}: no such file or directory")]
    Missing { path: PathBuf },
}

const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// The manifest files under `paths` (a file as given; a directory's matching files,
/// recursively, in name order).
pub fn list_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ManifestError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|_| ManifestError::Missing { path: path.clone() })?;
        if meta.is_dir() {
            collect_dir(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn collect_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let io = |source| ManifestError::Io { path: dir.to_path_buf(), source };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).map_err(io)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue; // editor swap files, hidden directories
        }
        if path.is_dir() {
            collect_dir(&path, out)?;
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e)) {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads every manifest under `paths` into one cluster view. Files are parsed on every core;
/// they are merged in name order, so an object defined twice takes the later file's version.
pub fn load(paths: &[PathBuf]) -> Result<(ClusterState, Vec<PathBuf>), ManifestError> {
    let files = list_files(paths)?;
    let read = |file: &PathBuf| -> Result<ClusterState, ManifestError> {
        let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Io { path: file.clone(), source })?;
        let mut part = ClusterState::default();
        read_text(&text, file, &mut part)?;
        Ok(part)
    };
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(files.len()).max(1);
    let parts: Vec<Result<ClusterState, ManifestError>> = if workers == 1 {
        files.iter().map(read).collect()
    } else {
        let chunk = files.len().div_ceil(workers);
        std::thread::scope(|scope| {
            let handles: Vec<_> = files.chunks(chunk).map(|c| scope.spawn(move || c.iter().map(read).collect::<Vec<_>>())).collect();
            handles.into_iter().flat_map(|h| h.join().expect("manifest parser thread")).collect()
        })
    };
    let mut state = ClusterState::default();
    for part in parts {
        state.merge(part?);
    }
    Ok((state, files))
}

/// Adds the objects of one file's text to `state`.
pub fn read_text(text: &str, path: &Path, state: &mut ClusterState) -> Result<(), ManifestError> {
    let is_json = path.extension().and_then(|e| e.to_str()) == Some("json");
    let docs: Vec<Value> = if is_json {
        let v = serde_json::from_str(text).map_err(|e| ManifestError::Syntax { path: path.into(), doc: 1, message: e.to_string() })?;
        vec![v]
    } else {
        let mut docs = Vec::new();
        for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            let v = Value::deserialize(doc).map_err(|e| ManifestError::Syntax { path: path.into(), doc: i + 1, message: e.to_string() })?;
            docs.push(v);
        }
        docs
    };
    for (i, doc) in docs.into_iter().enumerate() {
        add_object(doc, path, i + 1, state)?;
    }
    Ok(())
}

fn add_object(doc: Value, path: &Path, doc_no: usize, state: &mut ClusterState) -> Result<(), ManifestError> {
    if doc.is_null() {
        return Ok(()); // an empty document (a leading `---`)
    }
    let Some(kind) = doc.get("kind").and_then(Value::as_str).map(str::to_owned) else {
        return Err(ManifestError::Syntax { path: path.into(), doc: doc_no, message: "not a Kubernetes object (no `kind`)".into() });
    };
    if kind == "List" || kind.ends_with("List") {
        let items = doc.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        for item in items {
            add_object(item, path, doc_no, state)?;
        }
        return Ok(());
    }
    let object = object_name(&doc);
    let invalid = |e: FieldError| ManifestError::Invalid { path: path.into(), kind: kind.clone(), object: object.clone(), field: e.field, message: e.message };
    match kind.as_str() {
        "Service" => {
            let svc: k8s_openapi::api::core::v1::Service = typed(doc).map_err(invalid)?;
            let svc = ServiceObject::try_from(&svc).map_err(invalid)?;
            state.services.insert(svc.key.clone(), svc);
        }
        "EndpointSlice" => {
            let slice: k8s_openapi::api::discovery::v1::EndpointSlice = typed(doc).map_err(invalid)?;
            if let Some(slice) = SliceObject::from_k8s(&slice).map_err(invalid)? {
                state.slices.insert(slice.key.clone(), slice);
            }
        }
        "Pod" => {
            let pod: k8s_openapi::api::core::v1::Pod = typed(doc).map_err(invalid)?;
            let pod = PodObject::try_from(&pod).map_err(invalid)?;
            state.pods.insert(pod.key.clone(), pod);
        }
        "Namespace" => {
            let ns: k8s_openapi::api::core::v1::Namespace = typed(doc).map_err(invalid)?;
            state.namespaces.insert(objects::namespace_name(&ns).map_err(invalid)?);
        }
        _ => {}
    }
    Ok(())
}

/// `namespace/name` as written in the document, for messages.
fn object_name(doc: &Value) -> String {
    let meta = doc.get("metadata");
    let get = |k| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    match (get("namespace"), get("name")) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.to_owned(),
        _ => "(unnamed)".to_owned(),
    }
}

/// Deserializes a typed API object, reporting the path of a bad field.
fn typed<T: serde::de::DeserializeOwned>(doc: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let field = e.path().to_string();
        FieldError { field: if field == "." { "(object)".into() } else { field }, message: e.into_inner().to_string() }
    })
}
