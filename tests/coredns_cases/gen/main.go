// Command gen writes tests/coredns_cases/cases.yaml from CoreDNS's own test files for its
// kubernetes plugin. It imports nothing from CoreDNS: it parses the Go source of the test
// tables (go/parser) and copies each case's question, rcode and expected records as text.
// What the test functions set around the tables (zones, namespaces, pod mode, options, local
// IPs) is written below as facts read from those functions; each suite names its function.
//
//	cd tests/coredns_cases/gen && go run . [COREDNS_SOURCE_DIR] > ../cases.yaml
//
// COREDNS_SOURCE_DIR defaults to the Go module cache's github.com/coredns/coredns@v1.15.0,
// the source tests/setup builds CoreDNS from.
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

const version = "v1.15.0"

// A suite is one CoreDNS test function: the tables it runs and how it sets the plugin up.
type suite struct {
	name   string
	file   string   // under plugin/kubernetes/
	test   string   // the Go test function
	tables []string // var names of the tables it runs, in its order; "Func.var" for a local
	mock   string   // the API connection it uses (clusters/<mock>.yaml holds its objects)
	zones  []string // New([]string{...})
	// Corefile lines for the kubernetes block that give what the function sets on the plugin.
	options []string
	// k.localIPs: the addresses a real server takes from its `bind`.
	localIPs  []string
	notSynced bool
	// What the function checks besides test.SortAndCheck.
	checks []string
	// Set when the function ignores SortAndCheck's result (its expectations were never checked).
	unchecked string
	note      string
}

var suites = []suite{
	{
		name: "serve", file: "handler_test.go", test: "TestServeDNS",
		tables: []string{"commonDnsTestCases", "dnsTestCases"}, mock: "serve",
		zones: []string{"cluster.local."}, options: []string{"namespaces testns"},
		checks: []string{"truncated", "cname_order"},
		note:   "k.Namespaces = {testns}; k.Upstream = the case's Upstub (the one case with an Upstream answers external.testns A from a truncated upstream reply)",
	},
	{
		name: "namespace", file: "handler_test.go", test: "TestServeNamespaceDNS",
		tables: []string{"nsTestCases"}, mock: "serve", zones: []string{"cluster.local."},
		unchecked: "TestServeNamespaceDNS calls test.SortAndCheck(resp, tc) and drops its error: only that ServeDNS returns no error is checked (the expected SOA has TTL 300, which the mock's plugin, ttl 5, cannot give)",
		note:      "k.Namespaces = {} (every namespace exposed); the mock's GetNamespaceByName finds every namespace except nsnoexist and pod-nons",
	},
	{
		name: "not_synced", file: "handler_test.go", test: "TestNotSyncedServeDNS",
		tables: []string{"notSyncedTestCases"}, mock: "serve", zones: []string{"cluster.local."},
		options: []string{"namespaces testns"}, notSynced: true, checks: []string{"cname_order"},
		note: "APIConnServeTest{notSynced: true}: HasSynced() is false",
	},
	{
		name: "preserve_case", file: "handler_case_test.go", test: "TestPreserveCase",
		tables: []string{"dnsPreserveCaseCases"}, mock: "serve", zones: []string{"cluster.local."},
		options: []string{"ignore empty_service"},
		note:    "k.opts.ignoreEmptyService = true",
	},
	{
		name: "empty_service", file: "handler_ignore_emptyservice_test.go", test: "TestServeDNSEmptyService",
		tables: []string{"dnsEmptyServiceTestCases"}, mock: "serve", zones: []string{"cluster.local."},
		options: []string{"ignore empty_service"}, checks: []string{"cname_order"},
		note: "k.opts.ignoreEmptyService = true",
	},
	{
		name: "pods_disabled", file: "handler_pod_disabled_test.go", test: "TestServeDNSModeDisabled",
		tables: []string{"podModeDisabledCases"}, mock: "serve", zones: []string{"cluster.local."},
		options: []string{"pods disabled"},
	},
	{
		name: "pods_insecure", file: "handler_pod_insecure_test.go", test: "TestServeDNSModeInsecure",
		tables: []string{"podModeInsecureCases"}, mock: "serve", zones: []string{"cluster.local."},
		options: []string{"pods insecure"},
	},
	{
		name: "pods_verified", file: "handler_pod_verified_test.go", test: "TestServeDNSModeVerified",
		tables: []string{"podModeVerifiedCases"}, mock: "serve", zones: []string{"cluster.local."},
		options: []string{"pods verified"},
	},
	{
		name: "apex", file: "kubernetes_apex_test.go", test: "TestServeDNSApex",
		tables: []string{"kubeApexCases"}, mock: "serve", zones: []string{"cluster.local."},
		localIPs: []string{"127.0.0.1"},
		note:     "k.localIPs = [127.0.0.1]: the NS answer's glue is the server's own address",
	},
	{
		name: "reverse", file: "reverse_test.go", test: "TestReverse",
		tables: []string{"TestReverse.tests"}, mock: "reverse",
		zones: []string{"cluster.local.", "0.10.in-addr.arpa.", "168.192.in-addr.arpa.", "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa.", "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.7.7.0.0.0.0.d.f.ip6.arpa."},
	},
	{
		name: "zonal", file: "zonal_test.go", test: "TestServeDNSZonal",
		tables: []string{"zonalTestCases"}, mock: "zonal", zones: []string{"cluster.local."},
		options: []string{"namespaces testns", "zonal"},
		note:    "k.opts.zonal = true for zonalTestCases",
	},
	{
		name: "zonal_disabled", file: "zonal_test.go", test: "TestServeDNSZonal",
		tables: []string{"zonalDisabledTestCases"}, mock: "zonal", zones: []string{"cluster.local."},
		options: []string{"namespaces testns"},
		note:    "the same function, k.opts.zonal = false for zonalDisabledTestCases",
	},
}

// Zone transfer tests (xfr_test.go): functions, not tables; their facts by hand.
type xfrCase struct {
	test   string
	qname  string
	qtype  string // AXFR or IXFR
	serial string // IXFR: the serial asked for ("current": the zone's own)
	expect string // "zone": expectedZone; "soa": one SOA; "not_authoritative"; "ns_glue"
	note   string
}

var xfrSuites = []struct {
	name     string
	localIPs []string
	cases    []xfrCase
}{
	{name: "xfr", localIPs: []string{"10.0.0.10"}, cases: []xfrCase{
		{test: "TestKubernetesTransferNonAuthZone", qname: "example.com.", qtype: "AXFR", expect: "not_authoritative",
			note: "k.Transfer(\"example.com\", 0) returns transfer.ErrNotAuthoritative; on the wire: no zone is transferred"},
		{test: "TestKubernetesAXFR", qname: "cluster.local.", qtype: "AXFR", expect: "zone",
			note: "validateAXFR: the transfer starts with the SOA and record i is dns.IsDuplicate of expectedZone's record i (everything but the TTL)"},
		{test: "TestKubernetesIXFRFallback", qname: "cluster.local.", qtype: "IXFR", serial: "1", expect: "zone",
			note: "k.Transfer(zone, 1) while the zone's serial is 3 (Modified() = 3): the full zone, as AXFR"},
		{test: "TestKubernetesIXFRCurrent", qname: "cluster.local.", qtype: "IXFR", serial: "current", expect: "soa",
			note: "k.Transfer(zone, 3) at the current serial: exactly one record, the SOA"},
	}},
	{name: "xfr_dual_stack", localIPs: []string{"10.0.0.10", "fd00::10"}, cases: []xfrCase{
		{test: "TestKubernetesAXFRMultipleNSAddrs", qname: "cluster.local.", qtype: "AXFR", expect: "ns_glue",
			note: "starts and ends with the SOA; exactly one NS record; one A and one AAAA for ns.dns.cluster.local."},
	}},
}

func main() {
	src := ""
	if len(os.Args) > 1 {
		src = os.Args[1]
	} else {
		out, err := exec.Command("go", "env", "GOMODCACHE").Output()
		if err != nil {
			fail("go env GOMODCACHE: %v", err)
		}
		src = filepath.Join(strings.TrimSpace(string(out)), "github.com/coredns/coredns@"+version)
	}
	dir := filepath.Join(src, "plugin/kubernetes")
	ziphash := ""
	if out, err := exec.Command("go", "env", "GOMODCACHE").Output(); err == nil {
		if b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "cache/download/github.com/coredns/coredns/@v", version+".ziphash")); err == nil {
			ziphash = strings.TrimSpace(string(b))
		}
	}

	files := map[string]*ast.File{}
	parse := func(name string) *ast.File {
		if f, ok := files[name]; ok {
			return f
		}
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, name), nil, 0)
		if err != nil {
			fail("%v", err)
		}
		files[name] = f
		return f
	}

	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# CoreDNS's own test cases for its kubernetes plugin, as data. Generated by\n")
	w("# tests/coredns_cases/gen (cd tests/coredns_cases/gen && go run . > ../cases.yaml)\n")
	w("# from the source of github.com/coredns/coredns %s: the Go module zip that tests/setup builds\n", version)
	w("# CoreDNS from (module hash %s).\n", ziphash)
	w("# The GitHub mirror searched has no v1.15.0 tag (its HEAD, 4b26cce, says 1.14.7); there\n")
	w("# plugin/kubernetes/handler_test.go differs from v1.15.0's in one line (the mock pod's PodIP).\n")
	w("#\n")
	w("# Each suite is one CoreDNS test function, each case one element of the tables it runs, with\n")
	w("# its origin (file, table, index; `test_index` is the index the function's messages print).\n")
	w("# Records are the strings CoreDNS's test passes to test.A/SRV/SOA/...(dns.NewRR), whitespace\n")
	w("# collapsed. The objects behind each mock are Kubernetes manifests in clusters/<mock>.yaml,\n")
	w("# written by hand from the mock (see the comments there).\n")
	w("#\n")
	w("# Comparison (test.SortAndCheck, plugin/test/helpers.go): rcode; the number of records in\n")
	w("# answer, authority and additional; then, after sorting the response's sections, record by\n")
	w("# record: owner name (exact, case-sensitive: Go !=), TTL, type, and per type: A/AAAA address,\n")
	w("# SRV priority/weight/port/target, SOA primary (mname) only, PTR/CNAME/NS target, TXT text.\n")
	w("# `checks` are what the function checks besides: truncated (TC as `truncated`), cname_order\n")
	w("# (no CNAME after its target).\n")
	w("#\n")
	w("# Not here: TestMultiClusterServeDNS (commonDnsTestCases again, 34, plus\n")
	w("# multiclusterDnsTestCases, 10, with `multicluster cluster.local`) and\n")
	w("# TestKubernetesMultiClusterAXFR (1): 45 multicluster cases, skipped (kdns has no multicluster).\n")
	w("# Also not here, because they call plugin functions and build no DNS message: external_test.go\n")
	w("# (the k8s_external plugin's External()), kubernetes_test.go (Services(), Records()),\n")
	w("# ns_test.go (nsAddrs()), metadata_test.go, parse_test.go, setup_test.go, controller_test.go.\n")
	w("source: {module: github.com/coredns/coredns, version: %s, ziphash: %q}\n", version, ziphash)
	w("suites:\n")

	total := 0
	for _, s := range suites {
		f := parse(s.file)
		w("- name: %s\n", s.name)
		w("  test: %s  # plugin/kubernetes/%s\n", s.test, s.file)
		w("  mock: %s\n", s.mock)
		w("  zones: [%s]\n", quoteAll(s.zones))
		w("  options: [%s]\n", quoteAll(s.options))
		if len(s.localIPs) > 0 {
			w("  local_ips: [%s]\n", quoteAll(s.localIPs))
		}
		if s.notSynced {
			w("  not_synced: true\n")
		}
		w("  checks: [%s]\n", strings.Join(s.checks, ", "))
		if s.unchecked != "" {
			w("  unchecked: %q\n", s.unchecked)
		}
		if s.note != "" {
			w("  note: %q\n", s.note)
		}
		w("  cases:\n")
		testIndex := 0
		for _, table := range s.tables {
			elems := tableElems(f, table)
			for i, e := range elems {
				c := caseOf(e)
				total++
				w("  - origin: %q\n", fmt.Sprintf("%s %s[%d]", s.file, table, i))
				w("    test_index: %d\n", testIndex)
				testIndex++
				w("    qname: %q\n", c.qname)
				w("    qtype: %s\n", c.qtype)
				w("    rcode: %s\n", c.rcode)
				if c.truncated {
					w("    truncated: true\n")
				}
				for _, sec := range []struct {
					name string
					rrs  []string
				}{{"answer", c.answer}, {"ns", c.ns}, {"extra", c.extra}} {
					if len(sec.rrs) == 0 {
						continue
					}
					w("    %s:\n", sec.name)
					for _, rr := range sec.rrs {
						w("    - %q\n", rr)
					}
				}
				if c.upstream != nil {
					w("    upstream:  # the Upstub: what the upstream answers for the CNAME target (its Lookup drops the CNAME owned by the question)\n")
					w("      truncated: %t\n", c.upstream.truncated)
					w("      answer:\n")
					for _, rr := range c.upstream.answer {
						w("      - %q\n", rr)
					}
				}
			}
		}
	}

	xf := parse("xfr_test.go")
	zone := constString(xf, "expectedZone")
	w("transfers:\n")
	for _, s := range xfrSuites {
		w("- name: %s\n", s.name)
		w("  mock: serve\n  zones: [\"cluster.local.\"]\n  options: [\"namespaces testns kube-system\"]\n")
		w("  local_ips: [%s]\n", quoteAll(s.localIPs))
		w("  cases:\n")
		for _, c := range s.cases {
			total++
			w("  - origin: %q\n", "xfr_test.go "+c.test)
			w("    qname: %q\n    qtype: %s\n", c.qname, c.qtype)
			if c.serial != "" {
				w("    serial: %q\n", c.serial)
			}
			w("    expect: %s\n", c.expect)
			w("    note: %q\n", c.note)
		}
	}
	w("# xfr_test.go expectedZone, in its order (TestKubernetesAXFR, TestKubernetesIXFRFallback).\n")
	w("expected_zone:\n")
	for _, line := range strings.Split(zone, "\n") {
		if line = strings.Join(strings.Fields(line), " "); line != "" {
			w("- %q\n", line)
		}
	}
	w("# %d cases.\n", total)
	os.Stdout.WriteString(b.String())
}

type tcase struct {
	qname, qtype, rcode string
	truncated           bool
	answer, ns, extra   []string
	upstream            *upstub
}

type upstub struct {
	truncated bool
	answer    []string
}

// tableElems finds `var NAME = []T{...}` or, for "Func.name", `name := []T{...}` in Func.
func tableElems(f *ast.File, table string) []ast.Expr {
	var lit *ast.CompositeLit
	if fn, local, ok := strings.Cut(table, "."); ok {
		ast.Inspect(f, func(n ast.Node) bool {
			d, isFn := n.(*ast.FuncDecl)
			if !isFn || d.Name.Name != fn {
				return true
			}
			ast.Inspect(d.Body, func(n ast.Node) bool {
				if a, ok := n.(*ast.AssignStmt); ok && len(a.Lhs) == 1 {
					if id, ok := a.Lhs[0].(*ast.Ident); ok && id.Name == local {
						lit, _ = a.Rhs[0].(*ast.CompositeLit)
					}
				}
				return lit == nil
			})
			return false
		})
	} else {
		ast.Inspect(f, func(n ast.Node) bool {
			if v, ok := n.(*ast.ValueSpec); ok && len(v.Names) == 1 && v.Names[0].Name == table && len(v.Values) == 1 {
				lit, _ = v.Values[0].(*ast.CompositeLit)
			}
			return lit == nil
		})
	}
	if lit == nil {
		fail("table %s not found", table)
	}
	return lit.Elts
}

func constString(f *ast.File, name string) string {
	var s string
	ast.Inspect(f, func(n ast.Node) bool {
		if v, ok := n.(*ast.ValueSpec); ok && len(v.Names) == 1 && v.Names[0].Name == name {
			s = str(v.Values[0])
		}
		return s == ""
	})
	if s == "" {
		fail("const %s not found", name)
	}
	return s
}

// caseOf reads a test.Case{...} or a kubeTestCase{Case: test.Case{...}, Upstream: ..., Truncated: ...}.
func caseOf(e ast.Expr) tcase {
	lit := e.(*ast.CompositeLit)
	var c tcase
	fields := map[string]ast.Expr{}
	for _, el := range lit.Elts {
		kv := el.(*ast.KeyValueExpr)
		fields[kv.Key.(*ast.Ident).Name] = kv.Value
	}
	if inner, ok := fields["Case"]; ok { // kubeTestCase
		c = caseOf(inner)
		if t, ok := fields["Truncated"]; ok {
			c.truncated = t.(*ast.Ident).Name == "true"
		}
		if u, ok := fields["Upstream"]; ok {
			stub := u.(*ast.UnaryExpr).X.(*ast.CompositeLit)
			up := &upstub{}
			for _, el := range stub.Elts {
				kv := el.(*ast.KeyValueExpr)
				switch kv.Key.(*ast.Ident).Name {
				case "Truncated":
					up.truncated = kv.Value.(*ast.Ident).Name == "true"
				case "Case":
					inner := caseOf(kv.Value)
					// Upstub.Lookup: for a qtype other than CNAME, CNAMEs owned by its Qname are dropped.
					for _, rr := range inner.answer {
						f := strings.Fields(rr)
						if inner.qtype != "CNAME" && len(f) > 3 && rrType(f) == "CNAME" && strings.EqualFold(f[0], inner.qname) {
							continue
						}
						up.answer = append(up.answer, rr)
					}
				}
			}
			c.upstream = up
		}
		return c
	}
	for k, v := range fields {
		switch k {
		case "Qname":
			c.qname = str(v)
		case "Qtype":
			c.qtype = strings.TrimPrefix(v.(*ast.SelectorExpr).Sel.Name, "Type")
		case "Rcode":
			c.rcode = map[string]string{"RcodeSuccess": "NOERROR", "RcodeNameError": "NXDOMAIN", "RcodeServerFailure": "SERVFAIL", "RcodeRefused": "REFUSED"}[v.(*ast.SelectorExpr).Sel.Name]
			if c.rcode == "" {
				fail("rcode %s", v.(*ast.SelectorExpr).Sel.Name)
			}
		case "Answer", "Ns", "Extra":
			var rrs []string
			for _, el := range v.(*ast.CompositeLit).Elts {
				call := el.(*ast.CallExpr)
				rrs = append(rrs, strings.Join(strings.Fields(str(call.Args[0])), " "))
			}
			switch k {
			case "Answer":
				c.answer = rrs
			case "Ns":
				c.ns = rrs
			default:
				c.extra = rrs
			}
		case "Truncated":
			c.truncated = v.(*ast.Ident).Name == "true"
		default:
			fail("field %s not handled", k)
		}
	}
	if c.rcode == "" {
		c.rcode = "NOERROR" // the zero value, dns.RcodeSuccess
	}
	return c
}

// rrType is the type of a record's fields: name [ttl] [class] type rdata.
func rrType(f []string) string {
	for _, t := range f[1:] {
		if _, err := strconv.Atoi(t); err == nil || t == "IN" {
			continue
		}
		return t
	}
	return ""
}

func str(e ast.Expr) string {
	s, err := strconv.Unquote(e.(*ast.BasicLit).Value)
	if err != nil {
		fail("%v", err)
	}
	return s
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "gen: "+format+"\n", a...)
	os.Exit(1)
}
