//! `--config FILE`: the `kubernetes` block of a Corefile, so a CoreDNS user's settings carry
//! over unchanged. The file may be a whole Corefile (the first `kubernetes` directive in any
//! server block is used) or the bare block. Unknown or bad options are errors with the line.

use std::path::{Path, PathBuf};

/// Settings read from a `kubernetes` block. `None`/empty means "not set in the file".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubernetesBlock {
    pub zones: Vec<String>,
    pub reverse_zones: Vec<String>,
    pub ttl: Option<u32>,
    pub pods: Option<String>,
    pub endpoint_pod_names: bool,
    pub noendpoints: bool,
    pub ignore_empty_service: bool,
    /// Zones whose NXDOMAIN answers go to the upstream instead; empty list = every zone.
    pub fallthrough: Option<Vec<String>>,
    pub namespaces: Vec<String>,
    pub kubeconfig: Option<(PathBuf, Option<String>)>,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct CorefileError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Newline,
}

fn tokenize(text: &str) -> Vec<(usize, Tok)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let mut chars = line.chars().peekable();
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut Vec<(usize, Tok)>| {
            if !word.is_empty() {
                out.push((line_no, Tok::Word(std::mem::take(word))));
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '#' => break,
                '"' => {
                    for c in chars.by_ref() {
                        if c == '"' {
                            break;
                        }
                        word.push(c);
                    }
                }
                '{' => {
                    flush(&mut word, &mut out);
                    out.push((line_no, Tok::Open));
                }
                '}' => {
                    flush(&mut word, &mut out);
                    out.push((line_no, Tok::Close));
                }
                c if c.is_whitespace() => flush(&mut word, &mut out),
                c => word.push(c),
            }
        }
        flush(&mut word, &mut out);
        out.push((line_no, Tok::Newline));
    }
    out
}

/// A server block key (`cluster.local:53`, `dns://.:53`) as a zone name.
fn key_zone(key: &str) -> String {
    let key = key.strip_prefix("dns://").unwrap_or(key);
    key.rsplit_once(':').map(|(z, _)| z).unwrap_or(key).to_string()
}

pub fn parse(text: &str, file: &Path) -> Result<KubernetesBlock, CorefileError> {
    let err = |line: usize, message: String| CorefileError { file: file.display().to_string(), line, message };
    let toks = tokenize(text);
    // Find `kubernetes` as the first word of a line, remembering the enclosing server keys.
    let mut depth = 0usize;
    let mut keys: Vec<String> = Vec::new();
    let mut line_words: Vec<String> = Vec::new();
    let mut i = 0;
    let mut start = None;
    while i < toks.len() {
        match &toks[i].1 {
            Tok::Word(w) => {
                if line_words.is_empty() && w == "kubernetes" && depth <= 1 {
                    start = Some(i);
                    break;
                }
                line_words.push(w.clone());
            }
            Tok::Open => {
                if depth == 0 {
                    keys = std::mem::take(&mut line_words);
                }
                depth += 1;
                line_words.clear();
            }
            Tok::Close => {
                depth = depth.saturating_sub(1);
                line_words.clear();
            }
            Tok::Newline => line_words.clear(),
        }
        i += 1;
    }
    let Some(start) = start else { return Err(err(1, "no `kubernetes` block".into())) };
    let mut block = KubernetesBlock::default();
    // Zones on the directive line; none means the server block's keys.
    let mut i = start + 1;
    let mut zones = Vec::new();
    while let Some((_, Tok::Word(w))) = toks.get(i) {
        zones.push(w.clone());
        i += 1;
    }
    if zones.is_empty() {
        zones = keys.iter().map(|k| key_zone(k)).collect();
    }
    for z in zones {
        let z = z.trim_end_matches('.').to_ascii_lowercase();
        if z.is_empty() {
            continue;
        }
        if z.ends_with("in-addr.arpa") || z.ends_with("ip6.arpa") {
            block.reverse_zones.push(z);
        } else {
            block.zones.push(z);
        }
    }
    if !matches!(toks.get(i), Some((_, Tok::Open))) {
        return Ok(block);
    }
    i += 1;
    // Options, one per line, until the closing brace.
    let mut line: Vec<String> = Vec::new();
    let mut line_no = toks.get(i).map_or(0, |t| t.0);
    loop {
        let Some((n, tok)) = toks.get(i) else { return Err(err(line_no, "the `kubernetes` block is not closed".into())) };
        i += 1;
        match tok {
            Tok::Word(w) => {
                if line.is_empty() {
                    line_no = *n;
                }
                line.push(w.clone());
            }
            Tok::Newline | Tok::Close => {
                if !line.is_empty() {
                    option(&mut block, &line).map_err(|m| err(line_no, m))?;
                    line.clear();
                }
                if *tok == Tok::Close {
                    return Ok(block);
                }
            }
            Tok::Open => return Err(err(*n, "unexpected `{` inside the kubernetes block".into())),
        }
    }
}

fn option(block: &mut KubernetesBlock, words: &[String]) -> Result<(), String> {
    let (name, args) = (words[0].as_str(), &words[1..]);
    let no_args = |args: &[String]| if args.is_empty() { Ok(()) } else { Err(format!("`{name}` takes no arguments")) };
    match name {
        "ttl" => {
            let [ttl] = args else { return Err("`ttl` takes one number (0-3600)".into()) };
            let ttl: u32 = ttl.parse().map_err(|_| format!("ttl {ttl:?} is not a number"))?;
            if ttl > 3600 {
                return Err(format!("ttl {ttl} is above 3600"));
            }
            block.ttl = Some(ttl);
        }
        "pods" => {
            let [mode] = args else { return Err("`pods` takes one of disabled, insecure, verified".into()) };
            if !["disabled", "insecure", "verified"].contains(&mode.as_str()) {
                return Err(format!("pods {mode:?}: expected disabled, insecure or verified"));
            }
            block.pods = Some(mode.clone());
        }
        "endpoint_pod_names" => {
            no_args(args)?;
            block.endpoint_pod_names = true;
        }
        "noendpoints" => {
            no_args(args)?;
            block.noendpoints = true;
        }
        "ignore" => match args {
            [what] if what == "empty_service" => block.ignore_empty_service = true,
            _ => return Err("`ignore` takes `empty_service`".into()),
        },
        "fallthrough" => block.fallthrough = Some(args.iter().map(|z| z.trim_end_matches('.').to_ascii_lowercase()).collect()),
        "namespaces" => {
            if args.is_empty() {
                return Err("`namespaces` needs at least one namespace".into());
            }
            block.namespaces = args.to_vec();
        }
        "kubeconfig" => match args {
            [path] => block.kubeconfig = Some((path.into(), None)),
            [path, context] => block.kubeconfig = Some((path.into(), Some(context.clone()))),
            _ => return Err("`kubeconfig` takes a path and an optional context".into()),
        },
        other => return Err(format!("unknown option `{other}` (kdns reads: ttl, pods, endpoint_pod_names, noendpoints, ignore empty_service, fallthrough, namespaces, kubeconfig)")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_corefile() {
        let text = "# comment\n.:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        pods insecure\n        ttl 30\n        fallthrough in-addr.arpa ip6.arpa\n        endpoint_pod_names\n        ignore empty_service\n        namespaces default kube-system\n    }\n    forward . /etc/resolv.conf\n}\n";
        let b = parse(text, Path::new("Corefile")).unwrap();
        assert_eq!(b.zones, ["cluster.local"]);
        assert_eq!(b.reverse_zones, ["in-addr.arpa", "ip6.arpa"]);
        assert_eq!(b.ttl, Some(30));
        assert_eq!(b.pods.as_deref(), Some("insecure"));
        assert!(b.endpoint_pod_names && b.ignore_empty_service && !b.noendpoints);
        assert_eq!(b.fallthrough, Some(vec!["in-addr.arpa".into(), "ip6.arpa".into()]));
        assert_eq!(b.namespaces, ["default", "kube-system"]);
    }

    #[test]
    fn a_bare_block_and_server_keys_as_zones() {
        let b = parse("kubernetes k8s.example {\n noendpoints\n}\n", Path::new("f")).unwrap();
        assert_eq!(b.zones, ["k8s.example"]);
        assert!(b.noendpoints);
        let b = parse("cluster.local:53 {\n  kubernetes\n}\n", Path::new("f")).unwrap();
        assert_eq!(b.zones, ["cluster.local"]);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse(".:53 {\n  kubernetes {\n    ttl 30\n    bogus 1\n  }\n}\n", Path::new("Corefile")).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.to_string().starts_with("Corefile:4: unknown option `bogus`"), "{e}");
        assert_eq!(parse("kubernetes {\n ttl 9999\n}", Path::new("f")).unwrap_err().line, 2);
        assert_eq!(parse("kubernetes {\n pods maybe\n}", Path::new("f")).unwrap_err().line, 2);
        assert!(parse("kubernetes {\n ttl 5\n", Path::new("f")).is_err());
        assert!(parse(".:53 {\n forward . 1.1.1.1\n}\n", Path::new("f")).is_err());
    }
}
