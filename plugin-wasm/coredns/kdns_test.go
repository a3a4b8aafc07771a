package kdns

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
	"google.golang.org/protobuf/encoding/protowire"
)

// The module the kdns build embeds (host/build.rs), or $KDNS_PLUGIN_WASM.
func modulePath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KDNS_PLUGIN_WASM"); p != "" {
		return p
	}
	p, _ := filepath.Abs("../../target/wasm-embed/wasm32-unknown-unknown/wasm-release/kdns_plugin.wasm")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no kdns wasm module at %s: build kdns first (cargo build -p kdns-host) or set KDNS_PLUGIN_WASM", p)
	}
	return p
}

func newEngine(t *testing.T, wasm []byte) *Engine {
	t.Helper()
	e, err := NewEngine(context.Background(), wasm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

// Protobuf by hand (the plugin has no generated code): field numbers from kdns.proto.
func str(num protowire.Number, s string) []byte {
	return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
}

func msg(num protowire.Number, parts ...[]byte) []byte {
	var body []byte
	for _, p := range parts {
		body = append(body, p...)
	}
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), body)
}

func join(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// A snapshot with one ClusterIP service, default/web at 10.96.0.10, port http 80/TCP.
func snapshot() []byte {
	port := msg(5, str(1, "http"), protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 80))
	service := msg(3, str(1, "default"), str(2, "web"), msg(4, net.IPv4(10, 96, 0, 10).To4()), port)
	return join(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 7), str(2, "default"), service)
}

func ask(t *testing.T, e *Engine, name string, qtype uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	wire, _ := q.Pack()
	out, err := e.Resolve(context.Background(), wire, 1232)
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		t.Fatalf("answer does not parse: %v", err)
	}
	return m
}

func TestEngineAnswersFromTheSnapshotAndDeltas(t *testing.T) {
	wasm, err := os.ReadFile(modulePath(t))
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, wasm)
	if e.Ready() {
		t.Fatal("ready before any snapshot")
	}
	if err := e.Update(context.Background(), updateConfig, join(str(1, "cluster.local"))); err != nil {
		t.Fatal(err)
	}
	if err := e.Update(context.Background(), updateSnapshot, snapshot()); err != nil {
		t.Fatal(err)
	}
	m := ask(t, e, "web.default.svc.cluster.local.", dns.TypeA)
	if len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "10.96.0.10" || !m.Authoritative {
		t.Fatalf("want one authoritative A 10.96.0.10, got %v", m)
	}
	if m := ask(t, e, "nope.default.svc.cluster.local.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Fatalf("want NXDOMAIN, got %v", m)
	}
	// A delta removing the service (Delta.remove_services = 3, a ServiceKey).
	delta := join(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 8), msg(3, str(1, "default"), str(2, "web")))
	if err := e.Update(context.Background(), updateDelta, delta); err != nil {
		t.Fatal(err)
	}
	if m := ask(t, e, "web.default.svc.cluster.local.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Fatalf("want NXDOMAIN after the delta, got %v", m)
	}
	// A message the module cannot decode is refused and changes nothing.
	if err := e.Update(context.Background(), updateSnapshot, []byte{0xff, 0xff, 0xff}); err == nil {
		t.Fatal("a garbage snapshot was accepted")
	}
	if m := ask(t, e, "web.default.svc.cluster.local.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Fatalf("a rejected snapshot changed the view: %v", m)
	}
}

func TestParseUpdate(t *testing.T) {
	kind, body, err := parseUpdate(msg(2, snapshot()[:3]))
	if err != nil || kind != updateSnapshot || len(body) != 3 {
		t.Fatalf("got %d %v %v", kind, body, err)
	}
	if _, _, err := parseUpdate([]byte{0x0a}); err == nil {
		t.Fatal("a truncated update parsed")
	}
	if _, _, err := parseUpdate(nil); err == nil {
		t.Fatal("an empty update parsed")
	}
}

func TestCorefile(t *testing.T) {
	good := []string{
		"kdns {\n wasm /x.wasm\n snapshot 127.0.0.1:5300\n}",
		"kdns cluster.local {\n wasm /x.wasm\n snapshot 127.0.0.1:5300\n fallthrough in-addr.arpa\n}",
	}
	for _, input := range good {
		k, err := parse(caddy.NewTestController("dns", input))
		if err != nil {
			t.Fatalf("%q: %v", input, err)
		}
		if k.WasmPath != "/x.wasm" || k.Snapshot != "127.0.0.1:5300" {
			t.Fatalf("%q: got %+v", input, k)
		}
	}
	bad := []string{
		"kdns {\n snapshot 127.0.0.1:5300\n}",
		"kdns {\n wasm /x.wasm\n}",
		"kdns {\n wasm /x.wasm\n snapshot a:1\n endpoint_pod_names\n}",
		"kdns {\n wasm\n snapshot a:1\n}",
	}
	for _, input := range bad {
		if _, err := parse(caddy.NewTestController("dns", input)); err == nil {
			t.Fatalf("%q was accepted", input)
		}
	}
}

func TestServeDNS(t *testing.T) {
	wasm, err := os.ReadFile(modulePath(t))
	if err != nil {
		t.Fatal(err)
	}
	k := &Kdns{Zones: []string{"cluster.local."}, engine: newEngine(t, wasm), Next: test.NextHandler(dns.RcodeSuccess, nil)}
	serve := func(name string) *dnstest.Recorder {
		r := new(dns.Msg)
		r.SetQuestion(name, dns.TypeA)
		w := dnstest.NewRecorder(&test.ResponseWriter{})
		rcode, _ := k.ServeDNS(context.Background(), w, r)
		if w.Msg == nil {
			w.Msg = &dns.Msg{MsgHdr: dns.MsgHdr{Rcode: rcode}}
		}
		return w
	}
	// Before the first snapshot: SERVFAIL, like the kubernetes plugin before its sync.
	if w := serve("web.default.svc.cluster.local."); w.Msg.Rcode != dns.RcodeServerFailure {
		t.Fatalf("want SERVFAIL before a snapshot, got %v", w.Msg)
	}
	_ = k.engine.Update(context.Background(), updateConfig, nil)
	if err := k.engine.Update(context.Background(), updateSnapshot, snapshot()); err != nil {
		t.Fatal(err)
	}
	if w := serve("web.default.svc.cluster.local."); len(w.Msg.Answer) != 1 {
		t.Fatalf("want the A record, got %v", w.Msg)
	}
	// Outside the plugin's zones: the next plugin (NextHandler writes nothing, says NOERROR).
	if w := serve("example.org."); w.Msg.Rcode != dns.RcodeSuccess || len(w.Msg.Answer) != 0 {
		t.Fatalf("want the next plugin, got %v", w.Msg)
	}
	// NXDOMAIN falls through only with fallthrough.
	if w := serve("nope.default.svc.cluster.local."); w.Msg.Rcode != dns.RcodeNameError {
		t.Fatalf("want NXDOMAIN, got %v", w.Msg)
	}
	k.Fall = fall.Root
	if w := serve("nope.default.svc.cluster.local."); w.Msg.Rcode != dns.RcodeSuccess {
		t.Fatalf("want fallthrough to the next plugin, got %v", w.Msg)
	}
}
