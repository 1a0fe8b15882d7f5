//! Reading a config file and parsing it: the only file I/O of the config crate.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::{
    bound_message, bound_path, ConfigError, LoadError, ShownPath, MAX_LISTED_ERRORS, QUOTE_CHARS,
};
use crate::files::{
    read_limited, size_text, Budget, Unreadable, MAX_CA_FILE_BYTES, MAX_CERTIFICATE_FILE_BYTES,
    MAX_CONFIG_FILE_BYTES, MAX_TOKEN_FILE_BYTES,
};
use crate::prescan;
use crate::schema::RawConfig;
use crate::snapshot::{AdminToken, Certificate, EtcdClientCertificate, KeyKind, Secret, Snapshot};
use crate::validate::{compile_anchored, Anchored};

/// Reads, parses and validates the file at `path`.
pub fn load_file(path: &Path) -> Result<Snapshot, LoadError> {
    let text = read_file(path)?;
    parse_file_text(&text, path)
}

/// Reads the file at `path` as text (for [`parse_file_text`]): a regular file of at
/// most [`MAX_CONFIG_FILE_BYTES`], in UTF-8.
pub fn read_file(path: &Path) -> Result<String, LoadError> {
    let problem = |problem: String| LoadError::File {
        file: path.to_path_buf(),
        problem,
    };
    let bytes = match read_limited(path, MAX_CONFIG_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(Unreadable::Io(source)) => {
            return Err(LoadError::Io {
                file: path.to_path_buf(),
                source,
            })
        }
        Err(Unreadable::NotRegular(kind)) => {
            return Err(problem(format!(
                "is {kind}, not a regular file; give the path of the YAML file itself"
            )))
        }
        Err(Unreadable::TooLarge(limit)) => {
            return Err(problem(format!(
                "is larger than {}, the most serin reads of a config file; check that it is \
                 the config file meant",
                size_text(limit)
            )))
        }
    };
    String::from_utf8(bytes).map_err(|err| {
        problem(format!(
            "is not UTF-8 text (byte {} is not); save it as UTF-8",
            err.utf8_error().valid_up_to()
        ))
    })
}

/// Parses and validates `text`, read from the file at `path` (which names it in errors
/// and is the base of relative paths in it).
pub fn parse_file_text(text: &str, path: &Path) -> Result<Snapshot, LoadError> {
    parse(text, &path.display().to_string(), path.parent())
}

const NEEDS: &str = "a serin config needs at least `listeners`, `routes` and `services` \
                     (see examples/quickstart.yaml)";

/// Parses and validates config text; `origin` names it in errors (a file path). Files
/// the config names (`admin.token_file`) are read relative to the working directory.
pub fn parse_str(text: &str, origin: &str) -> Result<Snapshot, LoadError> {
    parse(text, origin, None)
}

/// [`parse_str`], reading relative paths from `dir` (the config file's directory).
fn parse(text: &str, origin: &str, dir: Option<&Path>) -> Result<Snapshot, LoadError> {
    let empty = |what: &str| LoadError::Parse {
        file: origin.to_string(),
        line_col: None,
        path: String::new(),
        message: format!("the file {what}: {NEEDS}"),
    };
    if text.trim().is_empty() {
        return Err(empty("is empty"));
    }
    if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(LoadError::Parse {
            file: origin.to_string(),
            line_col: None,
            path: String::new(),
            message: format!(
                "the config is larger than {}, the most serin reads of a config",
                size_text(MAX_CONFIG_FILE_BYTES)
            ),
        });
    }
    // Bounds nesting and aliases before serde_yaml_ng, which cannot (prescan.rs).
    let seen = prescan::check(text).map_err(|exceeded| LoadError::Parse {
        file: origin.to_string(),
        line_col: Some((exceeded.line, exceeded.column)),
        path: bound_path(&exceeded.path),
        message: bound_message(&exceeded.message),
    })?;
    let parse_error = |err: serde_path_to_error::Error<serde_yaml_ng::Error>| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let line_col = inner.location().map(|l| (l.line(), l.column()));
        let (path, message) = parse_message(&inner, path);
        LoadError::Parse {
            file: origin.to_string(),
            line_col,
            path: bound_path(&path),
            message: bound_message(&message),
        }
    };
    let raw: RawConfig = if seen.merges {
        // serde_yaml_ng applies `<<` merges only to a `Value`, which has no locations:
        // errors of such a file name their path, not their line.
        let mut value: serde_yaml_ng::Value =
            serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text))
                .map_err(parse_error)?;
        value.apply_merge().map_err(|err| LoadError::Parse {
            file: origin.to_string(),
            line_col: None,
            path: String::new(),
            message: format!(
                "{err}: a `<<` key merges a mapping (`<<: *defaults`) or a list of mappings \
                 (`<<: [*a, *b]`) into the mapping that holds it"
            ),
        })?;
        serde_path_to_error::deserialize(value).map_err(parse_error)?
    } else {
        serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text))
            .map_err(parse_error)?
    };
    // The outline is only read when there is something to report.
    let outline = || serde_yaml_ng::from_str::<Outline>(text).ok();
    if raw.listeners.is_empty()
        && raw.routes.is_empty()
        && raw.services.is_empty()
        && raw.admin.is_none()
        && raw.state_dir.is_none()
        && raw.limits.is_none()
        && raw.telemetry.is_none()
        && raw.notify.is_empty()
        && raw.cluster.is_none()
        && matches!(outline(), Some(Outline::Null))
    {
        return Err(empty("holds no settings, only comments"));
    }
    let invalid = |mut errors: Vec<Anchored>| {
        // The first problems in the order of the checks: sorting tens of thousands by
        // their place in the document would cost more than finding them.
        let left_out = errors.len().saturating_sub(MAX_LISTED_ERRORS);
        errors.truncate(MAX_LISTED_ERRORS);
        LoadError::Invalid {
            file: origin.to_string(),
            errors: in_document_order(errors, outline().as_ref()),
            left_out,
        }
    };
    let mut budget = Budget::default();
    let token = read_token(&raw, dir, &mut budget);
    match (compile_anchored(&raw), token) {
        (Ok(mut snapshot), Ok(token)) => {
            snapshot.admin.token = token;
            let mut errors = read_certificates(&raw, &mut snapshot, dir, &mut budget);
            read_cluster_files(&raw, &mut snapshot, dir, &mut budget, &mut errors);
            if !errors.is_empty() {
                return Err(invalid(errors));
            }
            Ok(snapshot)
        }
        (Ok(_), Err(error)) => Err(invalid(vec![error])),
        (Err(errors), Ok(_)) => Err(invalid(errors)),
        (Err(mut errors), Err(error)) => {
            errors.push(error);
            Err(invalid(errors))
        }
    }
}

/// Reads the certificate and key files of every TLS listener (relative to `dir`) into
/// the snapshot; every file that cannot be read or holds no usable PEM is an error.
fn read_certificates(
    raw: &RawConfig,
    snapshot: &mut Snapshot,
    dir: Option<&Path>,
    budget: &mut Budget,
) -> Vec<Anchored> {
    let mut errors = Vec::new();
    let resolve = |written: &str| match dir {
        Some(dir) if !Path::new(written).is_absolute() => dir.join(written),
        _ => PathBuf::from(written),
    };
    for (i, raw_listener) in raw.listeners.iter().enumerate() {
        let Some(raw_tls) = &raw_listener.tls else {
            continue;
        };
        let Some(listener) = snapshot
            .listeners
            .iter_mut()
            .find(|l| l.name == raw_listener.name)
        else {
            continue;
        };
        let Some(tls) = listener.tls.as_mut() else {
            continue;
        };
        for (j, pair) in raw_tls.certificates.iter().enumerate() {
            let at = |field: &str| format!("listeners[{i}].tls.certificates[{j}].{field}");
            let mut error = |field: &str, message: String| {
                errors.push(Anchored {
                    anchor: at(field),
                    error: ConfigError::new(at(field), message),
                })
            };
            let advice = "give the certificate chain, leaf first";
            if let Some(certificate) = read_certificate(
                resolve(&pair.cert),
                resolve(&pair.key),
                advice,
                budget,
                &mut error,
            ) {
                tls.certificates.push(certificate);
            }
        }
    }
    read_upstream_tls(raw, snapshot, &resolve, budget, &mut errors);
    errors
}

/// Reads the CA, client certificate and key files of every version with `tls` (paths
/// resolved by `resolve`) into the snapshot; what cannot be read or used is an error.
fn read_upstream_tls(
    raw: &RawConfig,
    snapshot: &mut Snapshot,
    resolve: &dyn Fn(&str) -> PathBuf,
    budget: &mut Budget,
    errors: &mut Vec<Anchored>,
) {
    for (i, raw_service) in raw.services.iter().enumerate() {
        let Some(service) = snapshot
            .services
            .iter_mut()
            .find(|s| s.name == raw_service.name)
        else {
            continue;
        };
        for (j, raw_version) in raw_service.versions.iter().enumerate() {
            let Some(raw_tls) = &raw_version.tls else {
                continue;
            };
            let Some(tls) = service
                .versions
                .iter_mut()
                .find(|v| v.name == raw_version.name)
                .and_then(|v| v.tls.as_mut())
            else {
                continue;
            };
            let mut error = |field: &str, message: String| {
                let at = format!("services[{i}].versions[{j}].tls.{field}");
                errors.push(Anchored {
                    anchor: at.clone(),
                    error: ConfigError::new(at, message),
                })
            };
            if let Some(ca) = &raw_tls.ca {
                let file = resolve(ca);
                let what = PemFile {
                    limit: MAX_CA_FILE_BYTES,
                    holds: "the PEM certificates of the CAs to trust",
                };
                let advice = "give the PEM certificates of the CAs to trust";
                match read_pem(&file, &what, budget)
                    .and_then(|bytes| read_chain(&file, &bytes, advice))
                    .and_then(|roots| check_roots(&file, roots))
                {
                    Ok(roots) => {
                        tls.ca = roots;
                        tls.ca_file = Some(file);
                    }
                    Err(message) => error("ca", message),
                }
            }
            if let (Some(cert), Some(key)) = (&raw_tls.cert, &raw_tls.key) {
                let advice = "give the client certificate chain, leaf first";
                tls.client =
                    read_certificate(resolve(cert), resolve(key), advice, budget, &mut error);
            }
        }
    }
}

/// A certificate chain and its key read from their files, or `None` after telling
/// `error` (with the field, `cert` or `key`) what is wrong with each; `advice` says
/// what the certificate file should hold.
fn read_certificate(
    cert_file: PathBuf,
    key_file: PathBuf,
    advice: &str,
    budget: &mut Budget,
    error: &mut impl FnMut(&str, String),
) -> Option<Certificate> {
    let cert_what = PemFile {
        limit: MAX_CERTIFICATE_FILE_BYTES,
        holds: "a PEM certificate chain, leaf first",
    };
    let chain = read_pem(&cert_file, &cert_what, budget)
        .and_then(|bytes| read_chain(&cert_file, &bytes, advice))
        .map_err(|message| error("cert", message))
        .ok();
    let key_what = PemFile {
        limit: MAX_CERTIFICATE_FILE_BYTES,
        holds: "the certificate's PEM private key",
    };
    let key = read_pem(&key_file, &key_what, budget)
        .and_then(|bytes| read_key(&key_file, &bytes))
        .map_err(|message| error("key", message))
        .ok();
    let (chain, (key_kind, key)) = (chain?, key?);
    Some(Certificate {
        cert_file,
        key_file,
        chain,
        key,
        key_kind,
    })
}

/// `roots` when each is a certificate that can be trusted as a root, else why not.
fn check_roots(file: &Path, roots: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, String> {
    for (n, der) in roots.iter().enumerate() {
        let cert = rustls_pki_types::CertificateDer::from(der.as_slice());
        if let Err(err) = webpki::anchor_from_trusted_cert(&cert) {
            return Err(format!(
                "certificate {} in {} cannot be used as a trusted root: {err}; give the PEM certificates of the CAs to trust",
                n + 1,
                shown(file)
            ));
        }
    }
    Ok(roots)
}

/// A path as errors show it: whole when short, else its start and its length.
fn shown(file: &Path) -> String {
    ShownPath(&file.display().to_string()).to_string()
}

/// What a PEM file named by the config is read as: its size limit, and what it holds.
struct PemFile {
    limit: u64,
    holds: &'static str,
}

/// The bytes of the PEM file at `file`, within its limit and the config's budget, or
/// why not.
fn read_pem(file: &Path, what: &PemFile, budget: &mut Budget) -> Result<Vec<u8>, String> {
    let bytes = read_limited(file, what.limit).map_err(|err| match err {
        Unreadable::Io(err) => format!(
            "cannot read {}: {err}; fix the path (relative paths are relative to the config file's directory)",
            shown(file)
        ),
        Unreadable::NotRegular(kind) => format!(
            "{} is {kind}, not a regular file; give the path of a file holding {}",
            shown(file),
            what.holds
        ),
        Unreadable::TooLarge(limit) => format!(
            "{} is larger than {}, the most serin reads of such a file; give a file holding only {}",
            shown(file),
            size_text(limit),
            what.holds
        ),
    })?;
    budget.take(bytes.len(), file)?;
    Ok(bytes)
}

/// The PEM certificates in `bytes`, read from `file` (DER), or why there are none;
/// `advice` says what the file should hold.
fn read_chain(file: &Path, bytes: &[u8], advice: &str) -> Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let chain: Result<Vec<Vec<u8>>, _> = CertificateDer::pem_slice_iter(bytes)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect();
    match chain {
        Ok(chain) if !chain.is_empty() => Ok(chain),
        _ => Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----); {advice}",
            shown(file)
        )),
    }
}

/// The first PEM private key in `bytes`, read from `file`, or why there is none.
fn read_key(file: &Path, bytes: &[u8]) -> Result<(KeyKind, Vec<u8>), String> {
    use rustls_pki_types::pem::{PemObject, SectionKind};
    <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .find_map(|(kind, der)| match kind {
            SectionKind::PrivateKey => Some((KeyKind::Pkcs8, der)),
            SectionKind::RsaPrivateKey => Some((KeyKind::Pkcs1, der)),
            SectionKind::EcPrivateKey => Some((KeyKind::Sec1, der)),
            _ => None,
        })
        .ok_or_else(|| {
            format!(
                "{} holds no PEM private key (PKCS#8, RSA or EC); give the key of the certificate",
                shown(file)
            )
        })
}

/// Reads the files `cluster.etcd` names (relative to `dir`) into the snapshot: the TLS
/// CA bundle, client certificate and key, and the password file. What cannot be read
/// or used is an error.
fn read_cluster_files(
    raw: &RawConfig,
    snapshot: &mut Snapshot,
    dir: Option<&Path>,
    budget: &mut Budget,
    errors: &mut Vec<Anchored>,
) {
    let (Some(raw_etcd), Some(etcd)) = (
        raw.cluster.as_ref().and_then(|c| c.etcd.as_ref()),
        snapshot.cluster.as_mut().map(|c| &mut c.etcd),
    ) else {
        return;
    };
    let resolve = |written: &str| match dir {
        Some(dir) if !Path::new(written).is_absolute() => dir.join(written),
        _ => PathBuf::from(written),
    };
    let mut error = |field: &str, message: String| {
        let at = format!("cluster.etcd.{field}");
        errors.push(Anchored {
            anchor: at.clone(),
            error: ConfigError::new(at, message),
        })
    };
    if let (Some(raw_tls), Some(tls)) = (&raw_etcd.tls, etcd.tls.as_mut()) {
        if let Some(ca) = &raw_tls.ca {
            let file = resolve(ca);
            let what = PemFile {
                limit: MAX_CA_FILE_BYTES,
                holds: "the PEM certificates of the CAs that sign etcd's certificates",
            };
            let advice = "give the PEM certificates of the CAs that sign etcd's certificates";
            match read_pem(&file, &what, budget)
                .and_then(|bytes| read_chain(&file, &bytes, advice).map(|roots| (bytes, roots)))
                .and_then(|(bytes, roots)| check_roots(&file, roots).map(|_| bytes))
            {
                Ok(pem) => {
                    tls.ca_pem = Some(pem);
                    tls.ca_file = Some(file);
                }
                Err(message) => error("tls.ca", message),
            }
        }
        if let (Some(cert), Some(key)) = (&raw_tls.cert, &raw_tls.key) {
            let (cert_file, key_file) = (resolve(cert), resolve(key));
            let cert_what = PemFile {
                limit: MAX_CERTIFICATE_FILE_BYTES,
                holds: "a PEM certificate chain, leaf first",
            };
            let advice = "give serin's client certificate chain for etcd, leaf first";
            let cert_pem = read_pem(&cert_file, &cert_what, budget)
                .and_then(|bytes| read_chain(&cert_file, &bytes, advice).map(|_| bytes))
                .map_err(|message| error("tls.cert", message))
                .ok();
            let key_what = PemFile {
                limit: MAX_CERTIFICATE_FILE_BYTES,
                holds: "the client certificate's PEM private key",
            };
            let key_pem = read_pem(&key_file, &key_what, budget)
                .and_then(|bytes| read_key(&key_file, &bytes).map(|_| bytes))
                .and_then(|bytes| {
                    String::from_utf8(bytes).map_err(|_| {
                        format!(
                            "{} is not PEM text (it is not UTF-8); give the client \
                             certificate's PEM private key",
                            shown(&key_file)
                        )
                    })
                })
                .map_err(|message| error("tls.key", message))
                .ok();
            if let (Some(cert_pem), Some(key_pem)) = (cert_pem, key_pem) {
                tls.client = Some(EtcdClientCertificate {
                    cert_file,
                    key_file,
                    cert_pem,
                    key_pem: Secret::new(key_pem),
                });
            }
        }
    }
    if let Some(auth) = etcd.auth.as_mut() {
        let file = resolve(&auth.password_file.display().to_string());
        match read_password(&file, budget) {
            Ok(password) => {
                auth.password = password;
                auth.password_file = file;
            }
            Err(message) => error("password_file", message),
        }
    }
}

/// etcd's password from the file at `file`: a regular file of at most
/// [`MAX_TOKEN_FILE_BYTES`], UTF-8, its trailing line break removed, not empty.
fn read_password(file: &Path, budget: &mut Budget) -> Result<Secret, String> {
    let shown = shown(file);
    let bytes = read_limited(file, MAX_TOKEN_FILE_BYTES).map_err(|err| match err {
        Unreadable::Io(err) if err.kind() == std::io::ErrorKind::NotFound => format!(
            "cannot read {shown}: the file does not exist; fix the path (a relative path is \
             relative to the config file's directory) or create the file holding etcd's \
             password"
        ),
        Unreadable::Io(err) => format!(
            "cannot read {shown}: {err}; check the path and the file's permissions (relative \
             paths are relative to the config file's directory)"
        ),
        Unreadable::NotRegular(kind) => format!(
            "{shown} is {kind}, not a regular file; give the path of a file holding etcd's \
             password"
        ),
        Unreadable::TooLarge(limit) => format!(
            "{shown} is larger than {}, the most serin reads of a password file; write only \
             etcd's password into it",
            size_text(limit)
        ),
    })?;
    budget.take(bytes.len(), file)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{shown} is not UTF-8 text; write etcd's password into it"))?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(format!("{shown} is empty; write etcd's password into it"));
    }
    Ok(Secret::new(password))
}

/// Reads the admin token from `admin.token_file` (relative to `dir`), when it is given
/// and not empty (validation reports an empty path).
fn read_token(
    raw: &RawConfig,
    dir: Option<&Path>,
    budget: &mut Budget,
) -> Result<Option<AdminToken>, Anchored> {
    let Some(Some(written)) = raw.admin.as_ref().and_then(|a| a.token_file.as_ref()) else {
        return Ok(None);
    };
    if written.trim().is_empty() {
        return Ok(None);
    }
    let path = match dir {
        Some(dir) if !Path::new(written).is_absolute() => dir.join(written),
        _ => PathBuf::from(written),
    };
    let error = |message: String| Anchored {
        anchor: "admin.token_file".to_string(),
        error: ConfigError::new("admin.token_file", message),
    };
    const OR_LEAVE_OUT: &str = "or leave out `token_file` to serve the admin API without a token";
    let shown = shown(&path);
    let bytes = read_limited(&path, MAX_TOKEN_FILE_BYTES).map_err(|err| {
        error(match err {
            Unreadable::Io(err) if err.kind() == std::io::ErrorKind::NotFound => format!(
                "cannot read {shown}: the file does not exist; fix the path (a relative path \
                 is relative to the config file's directory), create the file holding the \
                 admin API's token (e.g. the output of `openssl rand -hex 32`), {OR_LEAVE_OUT}"
            ),
            Unreadable::Io(err) => format!(
                "cannot read {shown}: {err}; check the path and the file's permissions \
                 (relative paths are relative to the config file's directory)"
            ),
            Unreadable::NotRegular(kind) => format!(
                "{shown} is {kind}, not a regular file; give the path of a file holding the \
                 admin API's token, {OR_LEAVE_OUT}"
            ),
            Unreadable::TooLarge(limit) => format!(
                "{shown} is larger than {}, the most serin reads of a token file; write only \
                 the admin API's token into it (e.g. the output of `openssl rand -hex 32`)",
                size_text(limit)
            ),
        })
    })?;
    budget.take(bytes.len(), &path).map_err(&error)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        error(format!(
            "{shown} is not UTF-8 text; write the admin API's token into it (e.g. the output \
             of `openssl rand -hex 32`)"
        ))
    })?;
    AdminToken::new(&text).map(Some).map_err(|why| {
        error(if text.trim().is_empty() {
            format!(
                "{shown} {why}; write the admin API's token into it (e.g. the output of \
                 `openssl rand -hex 32`), {OR_LEAVE_OUT}"
            )
        } else {
            format!(
                "the token in {shown} {why}; use a token such as the output of \
                 `openssl rand -hex 32`"
            )
        })
    })
}

/// The path and message of a parse error: serde_yaml_ng's message without the location
/// (printed in front, compiler style) and without the path it repeats (also printed in
/// front), with hints for common cases. An unknown key is reported at the mapping that
/// holds it (`services[0]: unknown field `spilt`, expected one of …`), where the
/// expected keys belong.
fn parse_message(err: &serde_yaml_ng::Error, mut path: String) -> (String, String) {
    let mut msg = err.to_string();
    if let Some(loc) = err.location() {
        let at = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(i) = msg.find(&at) {
            msg.replace_range(i..i + at.len(), "");
        }
    }
    // serde_yaml_ng writes the path of the value it was reading in front of its message
    // (none at the top level): for an unknown key, the path of its mapping.
    let mut value_path = String::new();
    if let Some((prefix, rest)) = msg.split_once(": ") {
        let within = |p: &str| {
            path == p || path.starts_with(&format!("{p}.")) || path.starts_with(&format!("{p}["))
        };
        if !prefix.contains(' ') && within(prefix) {
            value_path = prefix.to_string();
            msg = rest.to_string();
        }
    }
    let mut msg = shorten_quoted(&msg);
    if let Some(rest) = msg.strip_prefix("invalid type: unit value") {
        msg = format!("invalid type: an empty value{rest}");
    }
    if msg.starts_with("found character that cannot start any token") {
        msg.push_str(" (indent with spaces, never tabs; quote a value that starts with @ or `)");
    }
    if msg.starts_with("unknown field") {
        path = match err.location() {
            Some(_) => value_path,
            // Read from a `Value` (a file with `<<` merges), the message holds no path:
            // serde_path_to_error's ends with the unknown key.
            None => path
                .rsplit_once('.')
                .map(|(mapping, _)| mapping.to_string())
                .unwrap_or_default(),
        };
        msg.push_str(" (check the spelling; unknown keys are errors, not ignored)");
    } else if let Some(head) = msg.strip_suffix(", expected a sequence") {
        msg = format!("{head}, expected a list (write `[a, b]`, or one `- item` per line)");
    }
    (path, msg)
}

/// `message` (serde's) with every value it quotes — `"…"` (escaped as Rust's `{:?}`
/// does) or `` `…` `` — cut to its first [`QUOTE_CHARS`] characters, as [`Quoted`]
/// shows values: a key or a string of any length gives a short message. Control
/// characters between backticks are escaped.
fn shorten_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(1024));
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        out.push_str(&rest[..open]);
        let quote = rest.as_bytes()[open] as char;
        let inside = &rest[open + 1..];
        // The closing quote: for `"`, one not escaped by a backslash.
        let mut escaped = false;
        let close = inside.char_indices().find_map(|(i, c)| {
            let found = c == quote && !escaped;
            escaped = quote == '"' && c == '\\' && !escaped;
            found.then_some(i)
        });
        let Some(close) = close else {
            out.push_str(&rest[open..]);
            return out;
        };
        let value = &inside[..close];
        let total = value.chars().count();
        out.push(quote);
        for c in value.chars().take(QUOTE_CHARS) {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        if total > QUOTE_CHARS {
            out.push('…');
            out.push(quote);
            out.push_str(&format!(" ({total} characters)"));
        } else {
            out.push(quote);
        }
        rest = &inside[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Sorts `errors` into the order the document states the things they are about; errors
/// at the same place keep the order the checks found them in. Without an outline (the
/// document cannot be read as one), the order of the checks stays.
fn in_document_order(errors: Vec<Anchored>, outline: Option<&Outline>) -> Vec<crate::ConfigError> {
    let mut keyed: Vec<(Vec<usize>, usize, Anchored)> = errors
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let key = outline.map(|o| o.position(&e.anchor)).unwrap_or_default();
            (key, i, e)
        })
        .collect();
    keyed.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    keyed.into_iter().map(|(_, _, e)| e.error).collect()
}

/// The shape of a YAML document: its mappings' keys in the order written (duplicates
/// kept) and its lists, without the values.
#[derive(Debug)]
enum Outline {
    Null,
    Scalar,
    Seq(Vec<Outline>),
    Map(Vec<(String, Outline)>),
}

impl Outline {
    /// Where `path` (`services[0].split.weights.canary`) lies in the document, as the
    /// index of each step: sorting by it puts paths in document order. A step that the
    /// document does not have sorts after every entry of its mapping.
    fn position(&self, path: &str) -> Vec<usize> {
        let mut out = Vec::new();
        let mut node = self;
        let mut rest = path;
        while !rest.is_empty() {
            match node {
                Outline::Seq(items) => {
                    let Some(index) = rest
                        .strip_prefix('[')
                        .and_then(|r| r.split_once(']'))
                        .and_then(|(i, after)| Some((i.parse::<usize>().ok()?, after)))
                    else {
                        break;
                    };
                    out.push(index.0);
                    rest = index.1;
                    match items.get(index.0) {
                        Some(item) => node = item,
                        None => break,
                    }
                }
                Outline::Map(entries) => {
                    // The longest key that the path continues with (keys may hold dots).
                    let found = entries
                        .iter()
                        .enumerate()
                        .filter(|(_, (k, _))| {
                            rest.strip_prefix(k.as_str()).is_some_and(|after| {
                                after.is_empty() || after.starts_with(['.', '['])
                            })
                        })
                        .max_by_key(|(i, (k, _))| (k.len(), std::cmp::Reverse(*i)));
                    match found {
                        Some((i, (k, child))) => {
                            out.push(i);
                            rest = &rest[k.len()..];
                            node = child;
                        }
                        None => {
                            out.push(entries.len());
                            break;
                        }
                    }
                }
                Outline::Null | Outline::Scalar => break,
            }
            rest = rest.strip_prefix('.').unwrap_or(rest);
        }
        out
    }
}

impl<'de> Deserialize<'de> for Outline {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(OutlineVisitor)
    }
}

struct OutlineVisitor;

impl<'de> Visitor<'de> for OutlineVisitor {
    type Value = Outline;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Outline, E> {
        Ok(Outline::Null)
    }

    fn visit_none<E>(self) -> Result<Outline, E> {
        Ok(Outline::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Outline, E> {
        Ok(Outline::Scalar)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Outline, E> {
        Ok(Outline::Scalar)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Outline, E> {
        Ok(Outline::Scalar)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Outline, E> {
        Ok(Outline::Scalar)
    }

    fn visit_str<E>(self, _: &str) -> Result<Outline, E> {
        Ok(Outline::Scalar)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Outline, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Outline::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Outline, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<KeyText>()? {
            entries.push((key.0, map.next_value()?));
        }
        Ok(Outline::Map(entries))
    }
}

/// A mapping key as written (`010` stays `010`, as when a key is read as a `String`);
/// a key that is a list or a mapping reads as empty.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }

            fn visit_unit<E>(self) -> Result<KeyText, E> {
                Ok(KeyText(String::new()))
            }

            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }

            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }

            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }

            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }

            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyText, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KeyText(String::new()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyText, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(KeyText(String::new()))
            }
        }
        de.deserialize_str(KeyVisitor)
    }
}
