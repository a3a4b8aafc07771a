// Command coredns-kdns is CoreDNS with the kdns plugin compiled in, placed in the plugin chain
// where the kubernetes plugin sits.
package main

import (
	"slices"

	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/core/plugin" // every stock plugin
	"github.com/coredns/coredns/coremain"

	_ "kdns.invalid/coredns" // registers kdns
)

func init() {
	at := slices.Index(dnsserver.Directives, "kubernetes")
	if at < 0 {
		at = len(dnsserver.Directives)
	}
	dnsserver.Directives = slices.Insert(dnsserver.Directives, at, "kdns")
}

func main() { coremain.Run() }
