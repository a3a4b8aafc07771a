package kdns

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// hostileModule assembles a kdns ABI v1 module whose kdns_resolve body is `resolve` (the
// other exports behave): a module that traps, or one that never returns.
func hostileModule(resolve []byte) []byte {
	section := func(id byte, body ...byte) []byte { return append([]byte{id, byte(len(body))}, body...) }
	name := func(s string) []byte { return append([]byte{byte(len(s))}, s...) }
	types := section(1, 5,
		0x60, 0, 1, 0x7f, // () -> i32
		0x60, 1, 0x7f, 1, 0x7f, // (i32) -> i32
		0x60, 2, 0x7f, 0x7f, 0, // (i32, i32)
		0x60, 2, 0x7f, 0x7f, 1, 0x7f, // (i32, i32) -> i32
		0x60, 3, 0x7f, 0x7f, 0x7f, 1, 0x7e) // (i32, i32, i32) -> i64
	funcs := section(3, 7, 0, 1, 2, 3, 3, 3, 4)
	memory := section(5, 1, 0, 2) // two pages: the 64 KiB query buffer at 1024 fits
	exports := []byte{8}
	exports = append(append(exports, name("memory")...), 2, 0)
	for i, n := range []string{"kdns_abi_version", "kdns_alloc", "kdns_free", "kdns_configure", "kdns_load", "kdns_apply", "kdns_resolve"} {
		exports = append(append(exports, name(n)...), 0, byte(i))
	}
	body := func(code ...byte) []byte { return append([]byte{byte(len(code) + 1), 0}, code...) }
	code := []byte{7}
	code = append(code, body(0x41, 1, 0x0b)...)       // version: 1
	code = append(code, body(0x41, 0x80, 8, 0x0b)...) // alloc: 1024
	code = append(code, body(0x0b)...)                // free
	for i := 0; i < 3; i++ {
		code = append(code, body(0x41, 0, 0x0b)...) // configure, load, apply: 0
	}
	code = append(code, body(resolve...)...)
	out := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	out = append(out, types...)
	out = append(out, funcs...)
	out = append(out, memory...)
	out = append(out, section(7, exports...)...)
	out = append(out, section(10, code...)...)
	return out
}

var (
	trapping = hostileModule([]byte{0x00, 0x0b})                                     // unreachable
	looping  = hostileModule([]byte{0x03, 0x40, 0x0c, 0x00, 0x0b, 0x42, 0x00, 0x0b}) // loop br 0 end; i64.const 0
)

func TestATrappingModuleAnswersServfailAndIsRebuilt(t *testing.T) {
	e := newEngine(t, trapping)
	if err := e.Update(context.Background(), updateSnapshot, nil); err != nil {
		t.Fatal(err)
	}
	k := &Kdns{Zones: []string{"cluster.local."}, engine: e}
	for i := 0; i < 3; i++ {
		r := new(dns.Msg)
		r.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
		w := dnstest.NewRecorder(&test.ResponseWriter{})
		rcode, err := k.ServeDNS(context.Background(), w, r)
		if rcode != dns.RcodeServerFailure || err != nil || w.Msg != nil {
			t.Fatalf("want SERVFAIL left to the server to write, got rcode %d err %v msg %v", rcode, err, w.Msg)
		}
	}
	if traps, rebuilds := e.Traps(); traps != 3 || rebuilds != 3 {
		t.Fatalf("want 3 traps and 3 rebuilds, got %d and %d", traps, rebuilds)
	}
}

func TestALoopingModuleIsStoppedAtTheDeadline(t *testing.T) {
	e := newEngine(t, looping)
	q := new(dns.Msg)
	q.SetQuestion("web.default.svc.cluster.local.", dns.TypeA)
	wire, _ := q.Pack()
	started := time.Now()
	if _, err := e.Resolve(context.Background(), wire, 1232); err == nil {
		t.Fatal("a module that never returns gave an answer")
	}
	if took := time.Since(started); took > 5*time.Second {
		t.Fatalf("stopped only after %v", took)
	}
	// The rebuilt instance is stopped again, not wedged.
	if _, err := e.Resolve(context.Background(), wire, 1232); err == nil {
		t.Fatal("second call answered")
	}
}

func TestAModuleOfAnotherABIIsRefused(t *testing.T) {
	other := hostileModule([]byte{0x42, 0x00, 0x0b})
	// Patch kdns_abi_version's body (i32.const 1) to return 2.
	for i := len(other) - 1; i > 0; i-- {
		if other[i-1] == 0x41 && other[i] == 1 && other[i+1] == 0x0b {
			other[i] = 2
			break
		}
	}
	if _, err := NewEngine(context.Background(), other); err == nil || !strings.Contains(err.Error(), "ABI [2]") {
		t.Fatalf("an ABI 2 module: want a refusal naming the ABI, got %v", err)
	}
	if _, err := NewEngine(context.Background(), []byte("not wasm")); err == nil {
		t.Fatal("garbage was accepted as a module")
	}
}
