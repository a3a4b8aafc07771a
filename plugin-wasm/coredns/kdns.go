// Package kdns is a CoreDNS plugin that answers Kubernetes cluster DNS with the kdns core
// compiled to WebAssembly, run in-process by wazero. A kdns host (`kdns serve --grpc-listen`)
// streams it the config, the cluster snapshot and every change over gRPC, so CoreDNS needs no
// Kubernetes client of its own.
//
//	kdns [ZONES...] {
//	    wasm PATH          # the kdns ABI v1 module (plugin-wasm)
//	    snapshot ADDR      # host:port of kdns serve --grpc-listen
//	    fallthrough [ZONES...]
//	}
package kdns

import (
	"context"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/fall"
	clog "github.com/coredns/coredns/plugin/pkg/log"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

const pluginName = "kdns"

var log = clog.NewWithPlugin(pluginName)

// udpLimit is the largest UDP answer, as `kdns serve --max-udp-size` defaults to (the module
// also honours the client's EDNS buffer size).
const udpLimit = 1232

// Kdns is the plugin.
type Kdns struct {
	Next     plugin.Handler
	Zones    []string
	Fall     fall.F
	WasmPath string
	Snapshot string

	engine *Engine
	cancel context.CancelFunc
}

// Name implements plugin.Handler.
func (k *Kdns) Name() string { return pluginName }

// ServeDNS implements plugin.Handler.
func (k *Kdns) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	state := request.Request{W: w, Req: r}
	qname := state.Name()
	if plugin.Zones(k.Zones).Matches(qname) == "" {
		return plugin.NextOrFailure(k.Name(), k.Next, ctx, w, r)
	}
	// Like the kubernetes plugin before its first sync.
	if !k.engine.Ready() {
		return dns.RcodeServerFailure, nil
	}
	query, err := r.Pack()
	if err != nil {
		return dns.RcodeFormatError, nil
	}
	limit := udpLimit
	if state.Proto() == "tcp" {
		limit = 0
	}
	answer, err := k.engine.Resolve(ctx, query, limit)
	if err != nil {
		log.Errorf("%s: %v", qname, err)
		return dns.RcodeServerFailure, nil
	}
	if answer == nil {
		return dns.RcodeSuccess, nil
	}
	m := new(dns.Msg)
	if err := m.Unpack(answer); err != nil {
		log.Errorf("%s: the module's answer does not parse: %v", qname, err)
		return dns.RcodeServerFailure, nil
	}
	switch {
	case m.Rcode == dns.RcodeNameError && k.Fall.Through(qname):
		return plugin.NextOrFailure(k.Name(), k.Next, ctx, w, r)
	case m.Rcode == dns.RcodeRefused && !m.Authoritative && k.Next != nil:
		// Outside the zones the host configured: someone else's name.
		return plugin.NextOrFailure(k.Name(), k.Next, ctx, w, r)
	}
	if err := w.WriteMsg(m); err != nil {
		return dns.RcodeServerFailure, err
	}
	// Written: tell the server not to write an error response of its own.
	return dns.RcodeSuccess, nil
}
