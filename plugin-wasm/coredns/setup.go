package kdns

import (
	"context"
	"fmt"
	"os"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
)

func init() { plugin.Register(pluginName, setup) }

func setup(c *caddy.Controller) error {
	k, err := parse(c)
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	wasm, err := os.ReadFile(k.WasmPath)
	if err != nil {
		return plugin.Error(pluginName, fmt.Errorf("wasm %s: %w", k.WasmPath, err))
	}
	engine, err := NewEngine(context.Background(), wasm)
	if err != nil {
		return plugin.Error(pluginName, fmt.Errorf("wasm %s: %w", k.WasmPath, err))
	}
	k.engine = engine
	c.OnStartup(func() error {
		ctx, cancel := context.WithCancel(context.Background())
		k.cancel = cancel
		go watch(ctx, k.Snapshot, k.engine)
		return nil
	})
	c.OnShutdown(func() error {
		if k.cancel != nil {
			k.cancel()
		}
		return k.engine.Close(context.Background())
	})
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		k.Next = next
		return k
	})
	return nil
}

// parse reads `kdns [ZONES...] { wasm PATH; snapshot ADDR; fallthrough [ZONES...] }`.
func parse(c *caddy.Controller) (*Kdns, error) {
	k := &Kdns{}
	seen := false
	for c.Next() {
		if seen {
			return nil, plugin.ErrOnce
		}
		seen = true
		k.Zones = plugin.OriginsFromArgsOrServerBlock(c.RemainingArgs(), c.ServerBlockKeys)
		for c.NextBlock() {
			switch c.Val() {
			case "wasm":
				args := c.RemainingArgs()
				if len(args) != 1 {
					return nil, c.ArgErr()
				}
				k.WasmPath = args[0]
			case "snapshot":
				args := c.RemainingArgs()
				if len(args) != 1 {
					return nil, c.ArgErr()
				}
				k.Snapshot = args[0]
			case "fallthrough":
				k.Fall.SetZonesFromArgs(c.RemainingArgs())
			default:
				return nil, c.Errf("unknown property %q (kdns takes wasm, snapshot, fallthrough)", c.Val())
			}
		}
	}
	if k.WasmPath == "" {
		return nil, c.Err("kdns needs `wasm PATH`, the kdns ABI v1 module")
	}
	if k.Snapshot == "" {
		return nil, c.Err("kdns needs `snapshot ADDR`, the address of kdns serve --grpc-listen")
	}
	return k, nil
}
