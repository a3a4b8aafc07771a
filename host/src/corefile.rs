//! `--config FILE`: a CoreDNS Corefile, so a CoreDNS user's file works unchanged.
//!
//! The file is read as CoreDNS reads it (its Caddyfile syntax: whitespace-separated tokens,
//! `"quotes"` with `\"`, `#` comments, `{$ENV}` and `{%ENV%}` replaced in every token, an unset
//! variable becoming empty; `(snippets)` and `import`). kdns then maps what it has a feature
//! for: the `kubernetes` block (engine settings), `forward . TO...` (the upstreams),
//! `cache`, `health`'s lameduck, the `prometheus`/`health`/`ready` address (one ops HTTP
//! address), the server block's port and `bind` (the listen addresses). Every other plugin is
//! ignored with one [`Note`] saying why. What kdns cannot do and a user would be misled by
//! (stub-domain server blocks, a `kubernetes` option it lacks, forwarding over TLS) refuses the
//! whole file with one error naming the file and line: never half applied.
//!
//! A file holding only a `kubernetes` block (no server block around it) is read too.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

/// What the rest of the Corefile sets for `kdns serve`; each is the value of a flag, which,
/// given explicitly, overrides it. `None`/empty: not in the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Serve {
    /// `forward . TO...`: as `--upstream` takes them (IP, IP:PORT, an absolute resolv.conf path).
    pub upstreams: Vec<String>,
    /// `file:line` of that `forward`, for errors found when its files are read.
    pub forward_at: Option<String>,
    /// `forward`'s `max_concurrent` (`--upstream-max-concurrent`).
    pub max_concurrent: Option<usize>,
    /// `cache [TTL]` (`--upstream-cache-ttl`).
    pub cache_ttl: Option<u32>,
    /// `health { lameduck D }`, seconds (`--lameduck`).
    pub lameduck: Option<f64>,
    /// The `prometheus` address, else `health`'s, else `ready`'s (`--http-listen`).
    pub http_listen: Option<SocketAddr>,
    /// The server block's port, on `bind`'s addresses or 0.0.0.0 (`--listen`).
    pub listen: Vec<SocketAddr>,
    /// `kubernetes { startup_timeout D }`, seconds (`--sync-timeout`).
    pub sync_timeout: Option<f64>,
}

impl Serve {
    /// What differs between two readings that only a restart can apply (for SIGHUP).
    pub fn changed(&self, new: &Serve) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.upstreams != new.upstreams || self.max_concurrent != new.max_concurrent {
            out.push("forward");
        }
        if self.cache_ttl != new.cache_ttl {
            out.push("cache");
        }
        if self.lameduck != new.lameduck {
            out.push("lameduck");
        }
        if self.http_listen != new.http_listen {
            out.push("prometheus/health/ready address");
        }
        if self.listen != new.listen {
            out.push("server address");
        }
        out
    }
}

/// One line for the log at start: a plugin or option kdns does not apply, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub at: String,
    pub plugin: String,
    pub text: String,
    /// Whether ignoring it changes answers (logged as a warning).
    pub warn: bool,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.at, self.plugin, self.text)
    }
}

/// A whole Corefile as kdns applies it.
#[derive(Debug, Clone, Default)]
pub struct Corefile {
    pub kubernetes: KubernetesBlock,
    pub serve: Serve,
    /// One per ignored plugin or option, in file order.
    pub notes: Vec<Note>,
    /// What was taken from the file, each as `plugin -> flag value`, for the start log line.
    pub mapped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct CorefileError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Reads `text` (the contents of `file`) with the process environment.
pub fn parse(text: &str, file: &Path) -> Result<Corefile, CorefileError> {
    parse_with_env(text, file, &|name| std::env::var(name).ok())
}

/// [`parse`] with `env` looking up `{$NAME}` and `{%NAME%}`.
pub fn parse_with_env(text: &str, file: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Corefile, CorefileError> {
    let mut reader = Reader { files: vec![file.to_path_buf()], env, snippets: HashMap::new(), expansions: 0, segs: 0 };
    let tokens = lex(text, 0, 0, env);
    let tokens = reader.expand(tokens)?;
    let blocks = reader.blocks(&tokens)?;
    reader.build(&blocks)
}

// ---------------------------------------------------------------------------------------------
// Tokens, as coredns/caddy's caddyfile lexer makes them.

#[derive(Debug, Clone)]
struct Token {
    /// The text after `{$ENV}`/`{%ENV%}` replacement.
    text: String,
    /// As written: `{`, `}` and `import` are recognized on this, as caddy does.
    raw: String,
    file: usize,
    line: usize,
    /// The line the token ends on (a quoted token may span lines).
    end_line: usize,
    /// Which run of tokens it came in: the file's, or one `import` (whose lines are not
    /// comparable with those around it).
    seg: usize,
}

fn lex(text: &str, file: usize, seg: usize, env: &dyn Fn(&str) -> Option<String>) -> Vec<Token> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut line = 1;
    let (mut val, mut started, mut start_line) = (String::new(), false, 1);
    let (mut comment, mut quoted, mut escaped) = (false, false, false);
    let mut push = |val: &mut String, started: &mut bool, start_line: usize, end_line: usize| {
        let raw = std::mem::take(val);
        out.push(Token { text: replace_env(&raw, env), raw, file, line: start_line, end_line, seg });
        *started = false;
    };
    for ch in text.chars() {
        if quoted {
            if !escaped {
                if ch == '\\' {
                    escaped = true;
                    continue;
                }
                if ch == '"' {
                    quoted = false;
                    push(&mut val, &mut started, start_line, line);
                    continue;
                }
            }
            if ch == '\n' {
                line += 1;
            }
            // Only quotes are escaped; any other backslash stays.
            if escaped && ch != '"' {
                val.push('\\');
            }
            val.push(ch);
            escaped = false;
            continue;
        }
        if ch.is_whitespace() {
            if ch == '\n' {
                comment = false;
            }
            if started {
                push(&mut val, &mut started, start_line, line);
            }
            if ch == '\n' {
                line += 1;
            }
            continue;
        }
        if ch == '#' {
            comment = true;
        }
        if comment {
            continue;
        }
        if !started {
            started = true;
            start_line = line;
            if ch == '"' {
                quoted = true;
                continue;
            }
        }
        val.push(ch);
    }
    if started {
        push(&mut val, &mut started, start_line, line);
    }
    out
}

/// `{%NAME%}` then `{$NAME}` replaced by the variable's value; an unset one becomes empty, as
/// CoreDNS does (caddyfile `replaceEnvVars`). A value is not searched for references again.
fn replace_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    if !s.contains('{') {
        return s.to_string();
    }
    let s = replace_refs(s, "{%", "%}", env);
    replace_refs(&s, "{$", "}", env)
}

fn replace_refs(s: &str, start: &str, end: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(start) {
        let after = &rest[i + start.len()..];
        // No end, or an empty name (`{$}`): the rest is left as written, as caddy does.
        let Some(j) = after.find(end).filter(|&j| j > 0) else { break };
        out.push_str(&rest[..i]);
        out.push_str(&env(&after[..j]).unwrap_or_default());
        rest = &after[j + end.len()..];
    }
    out.push_str(rest);
    out
}

/// Whether `b` starts a new line after `a` (caddy's `isNewLine`).
fn new_line(a: &Token, b: &Token) -> bool {
    a.seg != b.seg || a.end_line < b.line
}

// ---------------------------------------------------------------------------------------------
// Server blocks and directives.

#[derive(Debug)]
struct Block {
    keys: Vec<Token>,
    directives: Vec<Directive>,
}

#[derive(Debug)]
struct Directive {
    name: Token,
    args: Vec<Token>,
    /// The lines inside `{ }`, if it has a block; nested braces stay as tokens.
    body: Option<Vec<Vec<Token>>>,
}

impl Directive {
    fn args(&self) -> Vec<&str> {
        self.args.iter().map(|t| t.text.as_str()).collect()
    }
}

/// Lines of a body as (the line's first token, its words).
fn body_lines(d: &Directive) -> impl Iterator<Item = (&Token, Vec<&str>)> {
    d.body.iter().flatten().map(|line| (&line[0], line.iter().map(|t| t.text.as_str()).collect()))
}

struct Reader<'a> {
    files: Vec<PathBuf>,
    env: &'a dyn Fn(&str) -> Option<String>,
    snippets: HashMap<String, Vec<Token>>,
    expansions: usize,
    /// The last [`Token::seg`] given out.
    segs: usize,
}

/// Most `import`s expanded in one file (caddy caps them too): a cycle ends here.
const MAX_EXPANSIONS: usize = 1000;

impl Reader<'_> {
    fn at(&self, t: &Token) -> String {
        format!("{}:{}", self.files[t.file].display(), t.line)
    }

    fn err(&self, t: &Token, message: impl Into<String>) -> CorefileError {
        CorefileError { file: self.files[t.file].display().to_string(), line: t.line, message: message.into() }
    }

    /// Takes out `(snippet) { ... }` definitions and replaces `import NAME|GLOB` (at the start
    /// of a line) with the snippet's or the files' tokens.
    fn expand(&mut self, mut tokens: Vec<Token>) -> Result<Vec<Token>, CorefileError> {
        let mut out: Vec<Token> = Vec::new();
        let mut depth = 0usize;
        let mut i = 0;
        while i < tokens.len() {
            let at_line_start = out.last().is_none_or(|p| new_line(p, &tokens[i]));
            let t = &tokens[i];
            if at_line_start && t.raw == "import" {
                let Some(pattern) = tokens.get(i + 1).filter(|p| !new_line(t, p)) else { return Err(self.err(t, "import: expected a snippet name or a file")) };
                if tokens.get(i + 2).is_some_and(|n| !new_line(pattern, n) && n.raw != "}") {
                    return Err(self.err(t, "import takes one argument (a snippet name, a file or a glob)"));
                }
                self.expansions += 1;
                if self.expansions > MAX_EXPANSIONS {
                    return Err(self.err(t, format!("import: more than {MAX_EXPANSIONS} imports (does a snippet or file import itself?)")));
                }
                let imported = self.import(t, &pattern.text.clone())?;
                tokens.splice(i..i + 2, imported);
                continue;
            }
            if depth == 0 && at_line_start && t.raw.len() > 2 && t.raw.starts_with('(') && t.raw.ends_with(')') && tokens.get(i + 1).is_some_and(|b| b.raw == "{") {
                let name = t.text[1..t.text.len() - 1].to_string();
                let mut nesting = 0usize;
                let mut j = i + 1;
                let mut body = Vec::new();
                loop {
                    let Some(b) = tokens.get(j) else { return Err(self.err(t, format!("snippet ({name}): its `{{` is not closed"))) };
                    match b.raw.as_str() {
                        "{" => nesting += 1,
                        "}" => nesting -= 1,
                        _ => {}
                    }
                    if nesting == 0 {
                        break;
                    }
                    if j > i + 1 {
                        body.push(b.clone());
                    }
                    j += 1;
                }
                if self.snippets.insert(name.clone(), body).is_some() {
                    return Err(self.err(t, format!("snippet ({name}) is defined twice")));
                }
                i = j + 1;
                continue;
            }
            match t.raw.as_str() {
                "{" => depth += 1,
                "}" => depth = depth.saturating_sub(1),
                _ => {}
            }
            out.push(t.clone());
            i += 1;
        }
        Ok(out)
    }

    /// The tokens `import PATTERN` stands for: a snippet, or the files the pattern (relative to
    /// the importing file's folder, one `*` at most in its last part) matches, in name order.
    fn import(&mut self, at: &Token, pattern: &str) -> Result<Vec<Token>, CorefileError> {
        self.segs += 1;
        let seg = self.segs;
        if let Some(tokens) = self.snippets.get(pattern) {
            return Ok(tokens.iter().map(|t| Token { seg, ..t.clone() }).collect());
        }
        if pattern.is_empty() {
            return Err(self.err(at, "import: an empty name (an unset environment variable?)"));
        }
        let base = self.files[at.file].parent().map(Path::to_path_buf).unwrap_or_default();
        let path = base.join(pattern);
        let files = if pattern.contains(['*', '?', '[']) {
            let (dir, name) = (path.parent().map(Path::to_path_buf).unwrap_or_default(), path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            let dir_text = dir.to_string_lossy();
            if dir_text.contains(['*', '?', '[']) || name.contains(['?', '[']) || name.matches('*').count() > 1 {
                return Err(self.err(at, format!("import {pattern}: kdns reads globs with one `*` in the file name only")));
            }
            let (prefix, suffix) = name.split_once('*').unwrap_or((&name, ""));
            let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect::<Vec<PathBuf>>())
                .unwrap_or_default()
                .into_iter()
                .filter(|p: &PathBuf| p.is_file() && p.file_name().map(|n| n.to_string_lossy()).is_some_and(|n| n.len() >= prefix.len() + suffix.len() && n.starts_with(prefix) && n.ends_with(suffix)))
                .collect();
            found.sort();
            found
        } else {
            if !path.is_file() {
                return Err(self.err(at, format!("import {pattern}: no such file ({})", path.display())));
            }
            vec![path]
        };
        let mut out = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| self.err(at, format!("import {}: {e}", file.display())))?;
            self.files.push(file);
            self.segs += 1;
            out.extend(lex(&text, self.files.len() - 1, self.segs, self.env));
        }
        Ok(out)
    }

    fn blocks(&self, tokens: &[Token]) -> Result<Vec<Block>, CorefileError> {
        let mut blocks = Vec::new();
        // A file that is only a `kubernetes` block, without a server block around it.
        if tokens.first().is_some_and(|t| t.text == "kubernetes") {
            let mut i = 0;
            let directives = self.directives(tokens, &mut i, None)?;
            return Ok(vec![Block { keys: Vec::new(), directives }]);
        }
        let mut i = 0;
        while i < tokens.len() {
            let first = &tokens[i];
            if first.raw == "{" || first.raw == "}" {
                return Err(self.err(first, format!("unexpected `{}` where a server block's address was expected", first.raw)));
            }
            let mut keys = Vec::new();
            let mut another = false;
            while i < tokens.len() {
                let t = &tokens[i];
                if t.raw == "{" {
                    break;
                }
                if !keys.is_empty() && !another && new_line(&tokens[i - 1], t) {
                    break;
                }
                let text = t.text.strip_suffix(',').unwrap_or(&t.text);
                another = t.text.ends_with(',');
                if !text.is_empty() {
                    keys.push(Token { text: text.to_string(), ..t.clone() });
                }
                i += 1;
            }
            let directives = if tokens.get(i).is_some_and(|t| t.raw == "{") {
                let open = &tokens[i];
                i += 1;
                self.directives(tokens, &mut i, Some(open))?
            } else {
                // caddy's single-server form: the directives run to the end of the file.
                self.directives(tokens, &mut i, None)?
            };
            if keys.is_empty() {
                return Err(self.err(first, "a server block without an address"));
            }
            blocks.push(Block { keys, directives });
        }
        Ok(blocks)
    }

    /// Directives until the `}` closing `open` (or the end of the file without one).
    fn directives(&self, tokens: &[Token], i: &mut usize, open: Option<&Token>) -> Result<Vec<Directive>, CorefileError> {
        let mut out = Vec::new();
        loop {
            let Some(t) = tokens.get(*i) else {
                return match open {
                    Some(open) => Err(self.err(open, "this `{` is not closed")),
                    None => Ok(out),
                };
            };
            match t.raw.as_str() {
                "}" if open.is_some() => {
                    *i += 1;
                    return Ok(out);
                }
                "}" => return Err(self.err(t, "unexpected `}`")),
                "{" => return Err(self.err(t, "unexpected `{` (a block opens on its directive's line)")),
                _ => {}
            }
            let name = t.clone();
            *i += 1;
            let mut args = Vec::new();
            let mut body = None;
            while let Some(a) = tokens.get(*i) {
                if new_line(&tokens[*i - 1], a) && body.is_none() {
                    break;
                }
                if body.is_some() {
                    // Something after the block's `}` on its line.
                    if new_line(&tokens[*i - 1], a) || a.raw == "}" {
                        break;
                    }
                    return Err(self.err(a, format!("unexpected `{}` after the `}}` of `{}`", a.text, name.text)));
                }
                match a.raw.as_str() {
                    "{" => {
                        let open_at = a;
                        *i += 1;
                        body = Some(self.body(tokens, i, open_at)?);
                    }
                    // `.:53 { errors }` on one line: the server block's close.
                    "}" => break,
                    _ => {
                        args.push(a.clone());
                        *i += 1;
                    }
                }
            }
            out.push(Directive { name, args, body });
        }
    }

    /// The lines of a directive's block, up to its `}`.
    fn body(&self, tokens: &[Token], i: &mut usize, open: &Token) -> Result<Vec<Vec<Token>>, CorefileError> {
        let mut lines: Vec<Vec<Token>> = Vec::new();
        let mut nesting = 0usize;
        loop {
            let Some(t) = tokens.get(*i) else { return Err(self.err(open, "this `{` is not closed")) };
            *i += 1;
            if t.raw == "}" && nesting == 0 {
                return Ok(lines);
            }
            match t.raw.as_str() {
                "{" => nesting += 1,
                "}" => nesting -= 1,
                _ => {}
            }
            match lines.last_mut() {
                Some(line) if !new_line(line.last().expect("lines are not empty"), t) => line.push(t.clone()),
                _ => lines.push(vec![t.clone()]),
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // From server blocks to kdns settings.

    fn build(&self, blocks: &[Block]) -> Result<Corefile, CorefileError> {
        let mut out = Corefile::default();
        let kube: Vec<(usize, &Directive)> = blocks.iter().enumerate().flat_map(|(b, block)| block.directives.iter().filter(|d| d.name.text == "kubernetes").map(move |d| (b, d))).collect();
        let Some(&(main, _)) = kube.first() else {
            return Err(CorefileError { file: self.files[0].display().to_string(), line: 1, message: "no `kubernetes` block (kdns serves a cluster: the file needs the kubernetes plugin)".into() });
        };
        if let Some((_, second)) = kube.get(1) {
            return Err(self.err(&second.name, format!("a second `kubernetes` (the first is at {}): kdns serves one cluster", self.at(&kube[0].1.name))));
        }
        // Every server block's addresses: the kubernetes block's, and root blocks beside it.
        let mut ports: Vec<(u16, &Token)> = Vec::new();
        let mut main_zones = Vec::new();
        for (b, block) in blocks.iter().enumerate() {
            let mut zones = Vec::new();
            for key in &block.keys {
                let (transport, zone, port) = split_key(&key.text).map_err(|m| self.err(key, format!("server block `{}`: {m}", key.text)))?;
                if transport != "dns" {
                    return Err(self.err(key, format!("server block `{}`: {transport}:// servers are not supported yet (kdns serves DNS over UDP and TCP)", key.text)));
                }
                zones.extend(normalize_zone(zone).map_err(|m| self.err(key, format!("server block `{}`: {m}", key.text)))?);
                if let Some(port) = port {
                    ports.push((port, key));
                }
            }
            if b == main {
                main_zones = zones;
            } else if zones.iter().any(|z| z != ".") {
                let key = &block.keys[0];
                let keys: Vec<&str> = block.keys.iter().map(|k| k.text.as_str()).collect();
                let message = if block.directives.iter().any(|d| d.name.text == "forward") {
                    format!(
                        "server block `{}` forwards {} to its own upstreams (a stub domain): per-zone forwarding is not supported yet; kdns sends every name outside the cluster zones to one `forward .` (the file is refused whole)",
                        keys.join(" "),
                        zones.join(" ")
                    )
                } else {
                    format!("server block `{}`: a server block for zones other than the cluster's and `.` is not supported yet (the file is refused whole)", keys.join(" "))
                };
                return Err(self.err(key, message));
            }
        }
        if let Some((first, _)) = ports.first()
            && let Some((other, key)) = ports.iter().find(|(p, _)| p != first)
        {
            return Err(self.err(key, format!("server blocks on ports {first} and {other}: kdns serves every zone on one set of addresses; not supported yet")));
        }
        let mut ctx = Mapping { notes: Vec::new(), noted: HashSet::new(), forward: None, ops: Vec::new(), bind: Vec::new() };
        let zone_key = blocks[main].keys.first();
        for (b, block) in blocks.iter().enumerate() {
            for d in &block.directives {
                if b == main && d.name.text == "kubernetes" {
                    let server_zones = if zone_key.is_some() { main_zones.clone() } else { Vec::new() };
                    out.kubernetes = self.kubernetes(d, &server_zones, &mut out.serve, &mut ctx)?;
                } else {
                    self.plugin(d, &mut out, &mut ctx)?;
                }
            }
        }
        // The ops address: prometheus's, else health's, else ready's; kdns serves all three
        // paths on it.
        let pick = ["prometheus", "health", "ready"].iter().find_map(|p| ctx.ops.iter().find(|(name, _, _)| name == p));
        if let Some((name, addr, at)) = pick {
            out.serve.http_listen = Some(*addr);
            out.mapped.push(format!("{name} {addr} -> --http-listen {addr}"));
            let elsewhere: Vec<&(&str, SocketAddr, String)> = ctx.ops.iter().filter(|(_, a, _)| a != addr).collect();
            if !elsewhere.is_empty() {
                let names: Vec<&str> = elsewhere.iter().map(|(n, _, _)| *n).collect();
                let addrs: Vec<String> = elsewhere.iter().map(|(n, a, at)| format!("{n} {a} ({at})")).collect();
                let text = format!("served on the {name} address {addr} too (kdns serves /health, /ready and /metrics on one address), not on {}: point probes at {addr}", addrs.join(", "));
                ctx.notes.push(Note { at: at.clone(), plugin: names.join("/"), text, warn: false });
            }
        }
        if let Some((port, _)) = ports.first() {
            let ips = if ctx.bind.is_empty() { vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)] } else { ctx.bind.clone() };
            out.serve.listen = ips.into_iter().map(|ip| SocketAddr::new(ip, *port)).collect();
            let listen: Vec<String> = out.serve.listen.iter().map(|a| format!("--listen {a}")).collect();
            out.mapped.push(format!("server port {port} -> {}", listen.join(" ")));
        } else if !ctx.bind.is_empty() {
            out.serve.listen = ctx.bind.iter().map(|ip| SocketAddr::new(*ip, 53)).collect();
            let listen: Vec<String> = out.serve.listen.iter().map(|a| format!("--listen {a}")).collect();
            out.mapped.push(format!("bind -> {}", listen.join(" ")));
        }
        out.notes = ctx.notes;
        Ok(out)
    }

    fn kubernetes(&self, d: &Directive, server_zones: &[String], serve: &mut Serve, ctx: &mut Mapping) -> Result<KubernetesBlock, CorefileError> {
        let mut block = KubernetesBlock::default();
        let mut zones = Vec::new();
        for z in &d.args {
            zones.extend(normalize_zone(&z.text).map_err(|m| self.err(z, format!("kubernetes: {m}")))?);
        }
        if zones.is_empty() {
            zones = server_zones.to_vec();
        }
        for z in zones {
            if z == "." {
                continue;
            }
            if z.ends_with("in-addr.arpa") || z.ends_with("ip6.arpa") {
                block.reverse_zones.push(z);
            } else {
                block.zones.push(z);
            }
        }
        if block.zones.is_empty() && !block.reverse_zones.is_empty() {
            return Err(self.err(&d.name, "kubernetes: a zone that is not a reverse zone must be given (as CoreDNS requires)"));
        }
        let mut endpoint: Option<&Token> = None;
        let mut tls: Option<&Token> = None;
        for (first, words) in body_lines(d) {
            if words.iter().any(|w| *w == "{" || *w == "}") {
                return Err(self.err(first, format!("kubernetes: unexpected brace in `{}`", words.join(" "))));
            }
            match option(&mut block, serve, &words).map_err(|m| self.err(first, m))? {
                Opt::Set => {}
                Opt::Endpoint => endpoint = Some(first),
                Opt::Tls => tls = Some(first),
                Opt::NoEffect(text) => ctx.note(self.at(first), &format!("kubernetes {}", words[0]), text, false),
            }
        }
        match (endpoint, &block.kubeconfig) {
            // As CoreDNS: endpoint is ignored when kubeconfig is set.
            (Some(at), Some(_)) => ctx.note(self.at(at), "kubernetes endpoint", "ignored: kubeconfig is set (CoreDNS ignores it then too)".into(), false),
            (Some(at), None) => {
                return Err(self.err(at, "kubernetes: `endpoint` is not supported yet: kdns reaches the API server in-cluster or through a kubeconfig (`kubeconfig FILE` here, or --kubeconfig)"));
            }
            (None, _) => {}
        }
        if let Some(at) = tls
            && (endpoint.is_none() || block.kubeconfig.is_some())
        {
            ctx.note(self.at(at), "kubernetes tls", "ignored: it applies to `endpoint` only, which is not used here (as in CoreDNS)".into(), false);
        }
        Ok(block)
    }

    /// Any plugin but `kubernetes`: mapped, noted as ignored, or refused.
    fn plugin(&self, d: &Directive, out: &mut Corefile, ctx: &mut Mapping) -> Result<(), CorefileError> {
        let name = d.name.text.as_str();
        let at = self.at(&d.name);
        let args = d.args();
        match name {
            "forward" => {
                if let Some(first) = &ctx.forward {
                    return Err(self.err(&d.name, format!("a second `forward` (the first is at {first}): kdns has one set of upstreams; per-zone forwarding is not supported yet")));
                }
                let Some((from, to)) = args.split_first().filter(|(_, to)| !to.is_empty()) else {
                    return Err(self.err(&d.name, "forward: expected FROM TO..."));
                };
                let from_zones = normalize_zone(from).map_err(|m| self.err(&d.name, format!("forward: {m}")))?;
                if from_zones.iter().any(|z| z != ".") {
                    return Err(self.err(
                        &d.name,
                        format!("`forward {from} ...` forwards one zone to its own upstreams (a stub domain): per-zone forwarding is not supported yet; kdns sends every name outside the cluster zones to one `forward .` (the file is refused whole)"),
                    ));
                }
                let mut upstreams = Vec::new();
                for (i, to) in to.iter().enumerate() {
                    let to_token = &d.args[i + 1];
                    upstreams.push(upstream(to).map_err(|m| self.err(to_token, format!("forward: {m}")))?);
                }
                for (first, words) in body_lines(d) {
                    match words[0] {
                        "max_concurrent" => {
                            let [n] = &words[1..] else { return Err(self.err(first, "forward: `max_concurrent` takes one number")) };
                            let n: usize = n.parse().ok().filter(|n| *n >= 1).ok_or_else(|| self.err(first, format!("forward: max_concurrent {n:?}: expected a number of at least 1")))?;
                            out.serve.max_concurrent = Some(n);
                        }
                        "except" => return Err(self.err(first, "forward: `except` is not supported yet (kdns would forward the names it lists)")),
                        "tls" | "tls_servername" => return Err(self.err(first, format!("forward: `{}` is not supported yet: kdns forwards plain DNS (UDP, TCP on truncation)", words[0]))),
                        option @ ("force_tcp" | "prefer_udp" | "expire" | "max_idle_conns" | "read_timeout" | "max_fails" | "max_connect_attempts" | "doh_method" | "policy" | "health_check" | "next"
                        | "failfast_all_unhealthy_upstreams" | "failover" | "source_address" | "resolver") => {
                            let why = match option {
                                "force_tcp" => "kdns asks over UDP and retries over TCP when an answer is truncated",
                                "prefer_udp" => "kdns always asks over UDP first",
                                "policy" => "kdns tries the upstreams in order, skipping a failed one for 10 s",
                                "max_fails" | "health_check" | "failfast_all_unhealthy_upstreams" => "a failed upstream is skipped for 10 s and logged",
                                "read_timeout" => "kdns waits 2 s per try, CoreDNS's default",
                                "next" | "failover" => "kdns has no next plugin and no failover on an rcode",
                                _ => "kdns does not have it",
                            };
                            ctx.note(self.at(first), &format!("forward {option}"), format!("ignored: {why}"), matches!(option, "next" | "failover" | "source_address" | "resolver"));
                        }
                        other => return Err(self.err(first, format!("forward: unknown option `{other}`"))),
                    }
                }
                let mapped = format!("forward . {} -> --upstream {}", to.join(" "), upstreams.join(" "));
                out.mapped.push(match out.serve.max_concurrent {
                    Some(n) => format!("{mapped} --upstream-max-concurrent {n}"),
                    None => mapped,
                });
                out.serve.upstreams = upstreams;
                out.serve.forward_at = Some(at.clone());
                ctx.forward = Some(at);
            }
            "cache" => {
                let mut rest = &args[..];
                // CoreDNS: without a TTL the longest is 3600 s.
                let mut ttl = 3600;
                if let Some(first) = rest.first()
                    && let Ok(n) = first.parse::<i64>()
                {
                    if n <= 0 {
                        return Err(self.err(&d.name, format!("cache: TTL {n}: must be positive (as CoreDNS requires)")));
                    }
                    ttl = n.min(i64::from(u32::MAX)) as u32;
                    rest = &rest[1..];
                }
                if rest.iter().any(|z| normalize_zone(z).map_or(true, |zs| zs.iter().any(|z| z != "."))) {
                    ctx.note(at.clone(), "cache zones", format!("ignored ({}): kdns caches every forwarded answer and answers the cluster zones from memory", rest.join(" ")), false);
                }
                let options: Vec<&str> = body_lines(d).map(|(_, w)| w[0]).collect();
                if !options.is_empty() {
                    ctx.note(at.clone(), "cache options", format!("ignored ({}): kdns keeps up to 9,984 forwarded answers for their TTL, capped by the cache TTL, at least 5 s", options.join(", ")), false);
                }
                out.serve.cache_ttl = Some(ttl);
                out.mapped.push(format!("cache {ttl} -> --upstream-cache-ttl {ttl}"));
            }
            "health" => {
                let addr = match args[..] {
                    [] => ops_addr(":8080").expect("a valid default"),
                    [a] => ops_addr(a).map_err(|m| self.err(&d.name, format!("health: {m}")))?,
                    _ => return Err(self.err(&d.name, "health: takes at most one address")),
                };
                ctx.ops.push(("health", addr, at.clone()));
                for (first, words) in body_lines(d) {
                    match &words[..] {
                        ["lameduck", dur] => {
                            let secs = duration(dur).map_err(|m| self.err(first, format!("health: lameduck {dur:?}: {m}")))?;
                            if !(0.0..=3600.0).contains(&secs) {
                                return Err(self.err(first, format!("health: lameduck {dur}: expected 0 to 3600 seconds")));
                            }
                            out.serve.lameduck = Some(secs);
                            out.mapped.push(format!("health lameduck {dur} -> --lameduck {secs}"));
                        }
                        ["lameduck", ..] => return Err(self.err(first, "health: `lameduck` takes one duration")),
                        [other, ..] => return Err(self.err(first, format!("health: unknown option `{other}`"))),
                        [] => {}
                    }
                }
            }
            "ready" | "prometheus" => {
                let default = if name == "ready" { ":8181" } else { "localhost:9153" };
                let addr = match args[..] {
                    [] => ops_addr(default).expect("a valid default"),
                    [a] => ops_addr(a).map_err(|m| self.err(&d.name, format!("{name}: {m}")))?,
                    _ => return Err(self.err(&d.name, format!("{name}: takes at most one address"))),
                };
                ctx.ops.push((if name == "ready" { "ready" } else { "prometheus" }, addr, at));
            }
            "bind" => {
                for a in &args {
                    match a.parse::<IpAddr>() {
                        Ok(ip) => ctx.bind.push(ip),
                        Err(_) => ctx.note(at.clone(), "bind", format!("{a:?} ignored: kdns binds addresses, not interfaces (give --listen)"), true),
                    }
                }
                if d.body.is_some() {
                    ctx.note(at, "bind except", "ignored: kdns binds the addresses given".into(), true);
                }
            }
            _ => {
                let (text, warn) = ignored(name);
                ctx.note(at, name, text, warn);
            }
        }
        Ok(())
    }
}

struct Mapping {
    notes: Vec<Note>,
    noted: HashSet<String>,
    /// `file:line` of the `forward`, once seen.
    forward: Option<String>,
    /// (plugin, address, file:line) of prometheus, health and ready.
    ops: Vec<(&'static str, SocketAddr, String)>,
    bind: Vec<IpAddr>,
}

impl Mapping {
    /// One note per plugin (or option), however many server blocks repeat it.
    fn note(&mut self, at: String, plugin: &str, text: String, warn: bool) {
        if self.noted.insert(plugin.to_string()) {
            self.notes.push(Note { at, plugin: plugin.to_string(), text, warn });
        }
    }
}

/// Why kdns does not apply a plugin, and whether that changes answers.
fn ignored(plugin: &str) -> (String, bool) {
    let (why, warn) = match plugin {
        "errors" => ("kdns always logs errors", false),
        "log" => ("kdns does not log each query; /metrics counts them (kdns_dns_requests_total)", false),
        "loop" => ("kdns probes its upstreams for a forwarding loop itself at start, and turns forwarding off if it finds one", false),
        "reload" => ("kdns does not poll the Corefile: send SIGHUP to reload it", false),
        "loadbalance" => ("kdns answers address records in a fixed order (its core has no randomness)", false),
        "debug" | "pprof" | "trace" | "dnstap" | "metadata" | "nsid" | "cancel" | "timeouts" | "bufsize" | "shed" | "multisocket" | "proxyproto" => ("kdns does not have it; answers are not changed", false),
        "autopath" => ("kdns does not shorten search-path walks; clients walk their search list as usual", false),
        "transfer" => ("zone transfers are allowed with --transfer-to CIDR", true),
        "hosts" => ("its names are not answered by kdns", true),
        "rewrite" | "template" | "dns64" | "minimal" | "any" | "header" | "acl" | "view" | "local" | "chaos" | "whoami" | "erratic" | "geoip" | "on" | "tsig" | "dnssec" | "sign" => {
            ("kdns does not have it; answers are what kdns gives without it", true)
        }
        "file" | "auto" | "secondary" | "etcd" | "route53" | "azure" | "clouddns" | "k8s_external" | "grpc" | "nomad" | "root" | "tls" | "quic" | "grpc_server" | "https" | "https3" => {
            ("kdns does not have it; the names it would serve are not answered", true)
        }
        _ => return ("ignored: not a plugin kdns knows (nor one of CoreDNS v1.15's)".to_string(), true),
    };
    (format!("ignored: {why}"), warn)
}

enum Opt {
    Set,
    Endpoint,
    Tls,
    /// Accepted, has no effect in kdns: the reason.
    NoEffect(String),
}

/// One line of the `kubernetes` block; `Err` is the message for that line.
fn option(block: &mut KubernetesBlock, serve: &mut Serve, words: &[&str]) -> Result<Opt, String> {
    let (name, args) = (words[0], &words[1..]);
    let no_args = |args: &[&str]| if args.is_empty() { Ok(()) } else { Err(format!("`{name}` takes no arguments")) };
    let not_yet = |why: &str| Err(format!("kubernetes: `{name}` is not supported yet: {why}"));
    if args.iter().any(|a| a.is_empty()) {
        return Err(format!("`{name}`: an empty value (an unset environment variable?)"));
    }
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
            if !["disabled", "insecure", "verified"].contains(mode) {
                return Err(format!("pods {mode:?}: expected disabled, insecure or verified"));
            }
            block.pods = Some(mode.to_string());
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
            ["empty_service"] => block.ignore_empty_service = true,
            _ => return Err("`ignore` takes `empty_service`".into()),
        },
        "fallthrough" => {
            let mut zones = Vec::new();
            for z in args {
                zones.extend(normalize_zone(z)?);
            }
            block.fallthrough = Some(zones);
        }
        "namespaces" => {
            if args.is_empty() {
                return Err("`namespaces` needs at least one namespace".into());
            }
            block.namespaces = args.iter().map(|s| s.to_string()).collect();
        }
        "kubeconfig" => match args {
            [path] => block.kubeconfig = Some((path.into(), None)),
            [path, context] => block.kubeconfig = Some((path.into(), Some(context.to_string()))),
            _ => return Err("`kubeconfig` takes a path and an optional context".into()),
        },
        "startup_timeout" => {
            let [d] = args else { return Err("`startup_timeout` takes one duration (e.g. 5s)".into()) };
            let secs = duration(d).map_err(|m| format!("startup_timeout {d:?}: {m}"))?;
            serve.sync_timeout = Some(secs);
        }
        "endpoint" => {
            if args.is_empty() {
                return Err("`endpoint` takes a URL".into());
            }
            return Ok(Opt::Endpoint);
        }
        "tls" => {
            let [_, _, _] = args else { return Err("`tls` takes CERT KEY CACERT".into()) };
            return Ok(Opt::Tls);
        }
        "apiserver_qps" | "apiserver_burst" | "apiserver_max_inflight" => {
            let [v] = args else { return Err(format!("`{name}` takes one number")) };
            let ok = if name == "apiserver_qps" { v.parse::<f64>().is_ok_and(|q| q >= 0.0 && q.is_finite()) } else { v.parse::<u64>().is_ok() };
            if !ok {
                return Err(format!("{name} {v:?}: expected a number of at least 0"));
            }
            return Ok(Opt::NoEffect("ignored: kdns sends the API server only its paged lists and one watch per collection, none per query".into()));
        }
        "labels" | "namespace_labels" => {
            if args.is_empty() {
                return Err(format!("`{name}` takes a label selector"));
            }
            return not_yet(if name == "labels" { "kdns serves every Service and EndpointSlice it reads" } else { "kdns serves every namespace it reads (`namespaces NAME...` is)" });
        }
        "multicluster" => return not_yet("kdns does not read ServiceImports (the Multi-Cluster Services API)"),
        "zonal" => return not_yet("kdns does not answer zone-scoped names of headless services"),
        other => return Err(format!("unknown option `{other}` (not an option of CoreDNS v1.15's kubernetes plugin)")),
    }
    Ok(Opt::Set)
}

/// A server block key: (transport, zone, port): `dns://.:53`, `cluster.local`, `:1053`.
fn split_key(key: &str) -> Result<(String, &str, Option<u16>), String> {
    let (transport, rest) = match key.split_once("://") {
        Some((t, rest)) => (t.to_ascii_lowercase(), rest),
        None => ("dns".to_string(), key),
    };
    let (zone, port) = match rest.rsplit_once(':') {
        Some((zone, port)) => {
            let port: u16 = port.parse().map_err(|_| format!("{port:?} is not a port"))?;
            (zone.trim_start_matches('[').trim_end_matches(']'), Some(port))
        }
        None => (rest, None),
    };
    Ok((transport, zone, port))
}

/// A zone as written (`Cluster.Local.`, `.`, `10.0.0.0/8`) as kdns names it: lowercase,
/// without the trailing dot, `.` for the root; a CIDR becomes its reverse zone (octet- or
/// nibble-aligned prefixes only).
fn normalize_zone(z: &str) -> Result<Vec<String>, String> {
    if let Some((ip, prefix)) = z.split_once('/') {
        let ip: IpAddr = ip.parse().map_err(|_| format!("{z:?} is not a zone or CIDR"))?;
        let prefix: u32 = prefix.parse().map_err(|_| format!("{z:?}: bad prefix length"))?;
        let (step, max, digits): (u32, u32, Vec<String>) = match ip {
            IpAddr::V4(v4) => (8, 32, v4.octets().iter().map(u8::to_string).collect()),
            IpAddr::V6(v6) => (4, 128, v6.octets().iter().flat_map(|b| [format!("{:x}", b >> 4), format!("{:x}", b & 0xf)]).collect()),
        };
        if prefix > max || !prefix.is_multiple_of(step) {
            return Err(format!("{z}: a CIDR zone whose prefix is not a multiple of {step} is not supported yet (name the reverse zones)"));
        }
        let mut labels: Vec<String> = digits[..(prefix / step) as usize].to_vec();
        labels.reverse();
        labels.push(if ip.is_ipv4() { "in-addr.arpa".into() } else { "ip6.arpa".into() });
        return Ok(vec![labels.join(".")]);
    }
    let z = z.trim_end_matches('.').to_ascii_lowercase();
    if z.contains("..") || z.contains(char::is_whitespace) {
        return Err(format!("{z:?} is not a zone name"));
    }
    Ok(vec![if z.is_empty() { ".".into() } else { z }])
}

/// A `forward` TO as `--upstream` takes it.
fn upstream(to: &str) -> Result<String, String> {
    if to.is_empty() {
        return Err("an empty upstream (an unset environment variable?)".into());
    }
    let (scheme, rest) = match to.split_once("://") {
        Some((s, rest)) => (s.to_ascii_lowercase(), rest),
        None => ("dns".into(), to),
    };
    if scheme != "dns" {
        return Err(format!("`{to}`: forwarding over {scheme}:// is not supported yet: kdns forwards plain DNS (UDP, TCP on truncation)"));
    }
    if crate::upstream::parse_addr(rest).is_ok() {
        return Ok(rest.to_string());
    }
    let unbracketed = rest.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<IpAddr>().is_ok() {
        return Ok(unbracketed.to_string());
    }
    let path = Path::new(rest);
    if path.is_absolute() {
        return Ok(rest.to_string());
    }
    if path.exists() {
        // As CoreDNS, relative to the working directory.
        return std::env::current_dir().map(|d| d.join(path).display().to_string()).map_err(|e| format!("{rest}: {e}"));
    }
    Err(format!("`{rest}` is not an address or a file: forwarding to a hostname is not supported yet (give its addresses)"))
}

/// The address of `health`, `ready` or `prometheus` (`:9153`, `localhost:9153`, `[::]:9153`).
fn ops_addr(a: &str) -> Result<SocketAddr, String> {
    let Some((host, port)) = a.rsplit_once(':') else { return Err(format!("{a:?}: expected [HOST]:PORT")) };
    let port: u16 = port.parse().map_err(|_| format!("{a:?}: {port:?} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h.parse().map_err(|_| format!("{a:?}: kdns takes an IP address here, not a hostname"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// A Go duration (`5s`, `1m30s`, `250ms`, `1.5h`, `0`) in seconds; negative ones are errors.
pub fn duration(s: &str) -> Result<f64, String> {
    let bad = || "expected a duration such as 5s, 250ms or 1m30s".to_string();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err("cannot be negative".into());
    }
    if s == "0" {
        return Ok(0.0);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(|| "a number needs a unit (ns, us, ms, s, m, h)".to_string())?;
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * unit;
        rest = &rest[u..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Corefile, CorefileError> {
        parse_with_env(text, Path::new("Corefile"), &|_| None)
    }

    fn err(text: &str) -> CorefileError {
        read(text).unwrap_err()
    }

    /// kubeadm's Corefile (cmd/kubeadm/app/phases/addons/dns), verbatim with its domain filled in.
    const KUBEADM: &str = ".:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
";

    #[test]
    fn kubeadms_corefile_maps_what_kdns_has_and_notes_the_rest() {
        let c = read(KUBEADM).unwrap();
        let k = &c.kubernetes;
        assert_eq!(k.zones, ["cluster.local"]);
        assert_eq!(k.reverse_zones, ["in-addr.arpa", "ip6.arpa"]);
        assert_eq!(k.ttl, Some(30));
        assert_eq!(k.pods.as_deref(), Some("insecure"));
        assert_eq!(k.fallthrough, Some(vec!["in-addr.arpa".into(), "ip6.arpa".into()]));
        let s = &c.serve;
        assert_eq!(s.upstreams, ["/etc/resolv.conf"]);
        assert_eq!(s.forward_at.as_deref(), Some("Corefile:13"));
        assert_eq!(s.max_concurrent, Some(1000));
        assert_eq!(s.cache_ttl, Some(30));
        assert_eq!(s.lameduck, Some(5.0));
        assert_eq!(s.http_listen, Some("0.0.0.0:9153".parse().unwrap()));
        assert_eq!(s.listen, ["0.0.0.0:53".parse::<SocketAddr>().unwrap()]);
        let noted: Vec<&str> = c.notes.iter().map(|n| n.plugin.as_str()).collect();
        assert_eq!(noted, ["errors", "cache options", "loop", "reload", "loadbalance", "health/ready"]);
        assert_eq!(c.notes[0].to_string(), "Corefile:2: errors: ignored: kdns always logs errors");
        assert!(c.notes.iter().all(|n| !n.warn), "{:?}", c.notes);
        // health and ready have their own ports in CoreDNS: one line says where they are.
        assert!(c.mapped.contains(&"prometheus 0.0.0.0:9153 -> --http-listen 0.0.0.0:9153".to_string()), "{:?}", c.mapped);
        let ops = c.notes.last().unwrap().to_string();
        assert!(ops.starts_with("Corefile:12: health/ready: served on the prometheus address 0.0.0.0:9153 too"), "{ops}");
        assert!(ops.contains("health 0.0.0.0:8080 (Corefile:3)") && ops.contains("ready 0.0.0.0:8181 (Corefile:6)"), "{ops}");
        // The older kubeadm file (plain `cache 30`) and the brief's one-line form read alike.
        let older = KUBEADM.replace("cache 30 {\n       disable success cluster.local\n       disable denial cluster.local\n    }", "cache 30");
        let c2 = read(&older).unwrap();
        assert_eq!((c2.kubernetes, c2.serve.cache_ttl), (c.kubernetes.clone(), Some(30)));
        let one_line = ".:53 {\n errors\n health { lameduck 5s }\n ready\n kubernetes cluster.local in-addr.arpa ip6.arpa { pods insecure\n fallthrough in-addr.arpa ip6.arpa\n ttl 30 }\n prometheus :9153\n forward . /etc/resolv.conf { max_concurrent 1000 }\n cache 30\n loop\n reload\n loadbalance }\n";
        let c3 = read(one_line).unwrap();
        assert_eq!(c3.kubernetes, c.kubernetes);
        assert_eq!(c3.serve, Serve { forward_at: Some("Corefile:9".into()), ..c.serve.clone() });
    }

    #[test]
    fn every_kubernetes_option_parses() {
        let c = read(
            "cluster.local:1053 {
  kubernetes {
    endpoint https://10.0.0.1:6443
    tls cert.pem key.pem ca.pem
    kubeconfig /etc/kube/config prod
    namespaces default kube-system
    pods verified
    endpoint_pod_names
    ttl 0
    noendpoints
    fallthrough
    ignore empty_service
    apiserver_qps 5.5
    apiserver_burst 10
    apiserver_max_inflight 20
    startup_timeout 1m30s
  }
}
",
        )
        .unwrap();
        let k = &c.kubernetes;
        assert_eq!(k.zones, ["cluster.local"], "zones from the server block's key");
        assert_eq!(k.namespaces, ["default", "kube-system"]);
        assert_eq!(k.pods.as_deref(), Some("verified"));
        assert!(k.endpoint_pod_names && k.noendpoints && k.ignore_empty_service);
        assert_eq!(k.ttl, Some(0));
        assert_eq!(k.fallthrough, Some(vec![]));
        assert_eq!(k.kubeconfig, Some(("/etc/kube/config".into(), Some("prod".into()))));
        assert_eq!(c.serve.sync_timeout, Some(90.0));
        assert_eq!(c.serve.listen, ["0.0.0.0:1053".parse::<SocketAddr>().unwrap()]);
        let noted: Vec<&str> = c.notes.iter().map(|n| n.plugin.as_str()).collect();
        assert_eq!(noted, ["kubernetes apiserver_qps", "kubernetes apiserver_burst", "kubernetes apiserver_max_inflight", "kubernetes endpoint", "kubernetes tls"]);
        assert_eq!(c.notes[3].at, "Corefile:3");
        // The options kdns lacks: refused with the option's name and line, "not supported yet".
        for (option, line) in [
            ("labels environment in (staging, qa),application=nginx", 3),
            ("namespace_labels istio-injection=enabled", 3),
            ("multicluster clusterset.local", 3),
            ("zonal", 3),
            ("endpoint https://10.0.0.1:6443", 3),
        ] {
            let e = err(&format!("cluster.local {{\n  kubernetes {{\n    {option}\n  }}\n}}\n"));
            let name = option.split_whitespace().next().unwrap();
            assert_eq!(e.line, line, "{e}");
            assert!(e.to_string().starts_with(&format!("Corefile:{line}: kubernetes: `{name}` is not supported yet")), "{e}");
        }
        // Values that cannot be right.
        for (option, needle) in [
            ("ttl 9999", "above 3600"),
            ("ttl -1", "not a number"),
            ("pods maybe", "pods \"maybe\""),
            ("startup_timeout soon", "startup_timeout \"soon\""),
            ("startup_timeout 5", "unit"),
            ("apiserver_qps -1", "apiserver_qps"),
            ("apiserver_burst many", "apiserver_burst"),
            ("tls cert.pem", "CERT KEY CACERT"),
            ("ignore everything", "empty_service"),
            ("kubeconfig", "path"),
            ("namespaces", "at least one"),
            ("bogus 1", "unknown option `bogus`"),
        ] {
            let e = err(&format!(".:53 {{\n  kubernetes cluster.local {{\n    ttl 5\n    {option}\n  }}\n}}\n"));
            assert_eq!(e.line, 4, "{option}: {e}");
            assert!(e.to_string().contains(needle), "{option}: {e}");
        }
    }

    #[test]
    fn a_bare_block_and_server_keys_as_zones() {
        let b = read("kubernetes k8s.example {\n noendpoints\n}\n").unwrap();
        assert_eq!(b.kubernetes.zones, ["k8s.example"]);
        assert!(b.kubernetes.noendpoints);
        assert!(b.serve.listen.is_empty());
        let b = read("cluster.local:53 {\n  kubernetes\n}\n").unwrap();
        assert_eq!(b.kubernetes.zones, ["cluster.local"]);
        let b = read("dns://Cluster.Local.:53 10.0.0.0/8 {\n  kubernetes\n}\n").unwrap();
        assert_eq!((b.kubernetes.zones, b.kubernetes.reverse_zones), (vec!["cluster.local".into()], vec!["10.in-addr.arpa".to_string()]));
        assert!(err("10.0.0.0/12 {\n kubernetes\n}\n").message.contains("not supported yet"));
        assert!(err("in-addr.arpa {\n kubernetes\n}\n").message.contains("not a reverse zone"));
    }

    #[test]
    fn environment_variables_are_replaced_and_unset_ones_are_empty() {
        let env = |name: &str| match name {
            "DOMAIN" => Some("k8s.example".to_string()),
            "TTL" => Some("17".to_string()),
            "UPSTREAM" => Some("10.0.0.9:53".to_string()),
            "PODS" => Some("insecure".to_string()),
            _ => None,
        };
        let text = ".:{$PORT}53 {\n  kubernetes {$DOMAIN} {\n    ttl {$TTL}\n    pods {%PODS%}\n    namespaces ns-{$UNSET}x\n  }\n  forward . {$UPSTREAM}\n}\n";
        let c = parse_with_env(text, Path::new("Corefile"), &env).unwrap();
        assert_eq!(c.kubernetes.zones, ["k8s.example"]);
        assert_eq!(c.kubernetes.ttl, Some(17));
        assert_eq!(c.kubernetes.pods.as_deref(), Some("insecure"));
        assert_eq!(c.kubernetes.namespaces, ["ns-x"]);
        assert_eq!(c.serve.upstreams, ["10.0.0.9:53"]);
        assert_eq!(c.serve.listen, ["0.0.0.0:53".parse::<SocketAddr>().unwrap()]);
        // An unset variable is empty, as in CoreDNS: the error is about the value it left.
        let e = parse_with_env(".:53 {\n kubernetes cluster.local {\n   ttl {$TTL}\n }\n}\n", Path::new("Corefile"), &|_| None).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("`ttl`: an empty value (an unset environment variable?)"), "{e}");
        let e = parse_with_env(".:53 {\n kubernetes\n forward . {$UPSTREAM}\n}\n", Path::new("Corefile"), &|_| None).unwrap_err();
        assert!(e.to_string().starts_with("Corefile:3: forward: an empty upstream (an unset environment variable?)"), "{e}");
        assert_eq!(replace_env("a{$}b{$X", &|_| Some("v".into())), "a{$}b{$X");
        assert_eq!(replace_env("{$A}-{%B%}", &|n| Some(n.to_lowercase())), "a-b");
    }

    #[test]
    fn other_plugins_get_one_note_each_and_unknown_ones_are_not_errors() {
        let c = read(".:53 {\n  log\n  errors\n  hosts /etc/hosts {\n    fallthrough\n  }\n  autopath @kubernetes\n  kubernetes cluster.local\n  frobnicate 1 2\n}\n.:53 {\n  errors\n  forward . 10.0.0.1 10.0.0.2:5353 {\n    policy sequential\n  }\n}\n").unwrap();
        let noted: Vec<(&str, bool)> = c.notes.iter().map(|n| (n.plugin.as_str(), n.warn)).collect();
        assert_eq!(noted, [("log", false), ("errors", false), ("hosts", true), ("autopath", false), ("frobnicate", true), ("forward policy", false)]);
        assert!(c.notes[4].text.contains("not a plugin kdns knows"));
        assert_eq!(c.serve.upstreams, ["10.0.0.1", "10.0.0.2:5353"]);
        assert_eq!(c.serve.forward_at.as_deref(), Some("Corefile:13"));
    }

    #[test]
    fn stub_domains_and_what_kdns_cannot_serve_refuse_the_whole_file() {
        let stub = format!("{KUBEADM}consul.local:53 {{\n    errors\n    cache 30\n    forward . 10.0.0.10\n}}\n");
        let e = err(&stub);
        assert_eq!(e.line, 24);
        assert!(e.message.contains("stub domain") && e.message.contains("not supported yet") && e.message.contains("refused whole"), "{e}");
        let e = err(".:53 {\n kubernetes cluster.local\n forward consul.local 10.0.0.10\n}\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("stub domain"), "{e}");
        let e = err(&format!("{KUBEADM}example.org {{\n  file db.example.org\n}}\n"));
        assert!(e.message.contains("not supported yet"), "{e}");
        let e = err(".:53 {\n kubernetes cluster.local\n forward . tls://9.9.9.9 {\n  tls_servername dns.quad9.net\n }\n}\n");
        assert!(e.to_string().starts_with("Corefile:3: forward: `tls://9.9.9.9`: forwarding over tls:// is not supported yet"), "{e}");
        let e = err(".:53 {\n kubernetes cluster.local\n forward . dns.example.net\n}\n");
        assert!(e.message.contains("hostname is not supported yet"), "{e}");
        let e = err(".:53 {\n kubernetes cluster.local\n forward . 10.0.0.1 {\n  except internal.example\n }\n}\n");
        assert_eq!(e.line, 4);
        let e = err(".:53 {\n kubernetes cluster.local\n}\n.:1053 {\n forward . 10.0.0.1\n}\n");
        assert!(e.message.contains("ports 53 and 1053"), "{e}");
        let e = err("tls://.:853 {\n kubernetes cluster.local\n}\n");
        assert!(e.message.contains("tls:// servers are not supported yet"), "{e}");
        let e = err(".:53 {\n kubernetes cluster.local\n}\n.:53 {\n kubernetes other.local\n}\n");
        assert_eq!(e.line, 5);
        assert!(e.message.contains("a second `kubernetes` (the first is at Corefile:2)"), "{e}");
        // A root block beside the cluster zone's block is the same server: mapped.
        let c = read("cluster.local:53 {\n kubernetes\n}\n.:53 {\n forward . 10.0.0.1\n cache\n prometheus 127.0.0.1:9253\n bind 127.0.0.1 ::1\n}\n").unwrap();
        assert_eq!(c.serve.upstreams, ["10.0.0.1"]);
        assert_eq!(c.serve.cache_ttl, Some(3600));
        assert_eq!(c.serve.http_listen, Some("127.0.0.1:9253".parse().unwrap()));
        assert_eq!(c.serve.listen, ["127.0.0.1:53".parse::<SocketAddr>().unwrap(), "[::1]:53".parse().unwrap()]);
    }

    #[test]
    fn errors_name_the_line() {
        let e = err(".:53 {\n  kubernetes {\n    ttl 30\n    bogus 1\n  }\n}\n");
        assert_eq!(e.line, 4);
        assert!(e.to_string().starts_with("Corefile:4: unknown option `bogus`"), "{e}");
        assert_eq!(err("kubernetes {\n ttl 9999\n}").line, 2);
        assert_eq!(err("kubernetes {\n pods maybe\n}").line, 2);
        assert_eq!(err("kubernetes {\n ttl 5\n").line, 1);
        assert!(err(".:53 {\n forward . 1.1.1.1\n}\n").message.contains("no `kubernetes` block"));
        let e = err(".:53 {\n kubernetes\n health {\n  lameduck soon\n }\n}\n");
        assert!(e.to_string().starts_with("Corefile:4: health: lameduck \"soon\""), "{e}");
        let e = err(".:53 {\n kubernetes\n cache 0\n}\n");
        assert!(e.to_string().starts_with("Corefile:3: cache: TTL 0: must be positive"), "{e}");
        let e = err(".:53 {\n kubernetes\n prometheus metrics.local:9153\n}\n");
        assert_eq!(e.line, 3);
        let e = err(".:53 {\n kubernetes\n forward . 10.0.0.1 {\n  max_concurrent 0\n }\n}\n");
        assert_eq!(e.line, 4);
        let e = err(".:53 {\n kubernetes\n}\n}\n");
        assert_eq!(e.line, 4);
    }

    #[test]
    fn caddyfile_syntax() {
        // Quotes (with an escaped quote), comments after tokens, keys split by commas over lines.
        let c = read("# top\ncluster.local:53,\n  other.local:53 { # trailing\n  kubernetes cluster.local {\n    namespaces \"a b\" \"c\\\"d\"#x\n  }\n}\n").unwrap();
        assert_eq!(c.kubernetes.namespaces, ["a b", "c\"d"]);
        // `{` inside a word is a word, as in caddy: `{$ENV}` works because of it.
        assert!(err("kubernetes {\n namespaces {a}\n ttl x\n}\n").message.contains("ttl"));
        // Snippets and imports, relative to the file; one note per plugin from either.
        let dir = std::env::temp_dir().join(format!("kdns-corefile-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("custom")).unwrap();
        std::fs::write(dir.join("custom/a.override"), "log\n").unwrap();
        std::fs::write(dir.join("custom/b.override"), "ready :8181\n").unwrap();
        let text = "(common) {\n  errors\n  cache 30\n}\n.:53 {\n  import common\n  kubernetes cluster.local\n  import custom/*.override\n  import custom/*.server\n}\n";
        let c = parse_with_env(text, &dir.join("Corefile"), &|_| None).unwrap();
        assert_eq!(c.serve.cache_ttl, Some(30));
        assert_eq!(c.serve.http_listen, Some("0.0.0.0:8181".parse().unwrap()));
        let noted: Vec<&str> = c.notes.iter().map(|n| n.plugin.as_str()).collect();
        assert_eq!(noted, ["errors", "log"]);
        assert!(c.notes[1].at.ends_with("a.override:1"), "{:?}", c.notes[1]);
        let e = parse_with_env(".:53 {\n kubernetes\n import missing.conf\n}\n", &dir.join("Corefile"), &|_| None).unwrap_err();
        assert_eq!(e.line, 3);
        let e = parse_with_env("(loop) {\n import loop\n}\n.:53 {\n kubernetes\n import loop\n}\n", &dir.join("Corefile"), &|_| None).unwrap_err();
        assert!(e.message.contains("import itself"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn go_durations() {
        assert_eq!(duration("5s"), Ok(5.0));
        assert_eq!(duration("1m30s"), Ok(90.0));
        assert_eq!(duration("1.5h"), Ok(5400.0));
        assert_eq!(duration("250ms"), Ok(0.25));
        assert_eq!(duration("0"), Ok(0.0));
        assert!(duration("5").is_err() && duration("-1s").is_err() && duration("5x").is_err() && duration("").is_err());
    }
}
