package kdns

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// queryDeadline bounds one query inside the module; a module that runs longer is stopped, the
// query gets SERVFAIL and the instance is rebuilt (the same limit as kdns serve --engine wasm).
const queryDeadline = 250 * time.Millisecond

// memoryLimitPages caps each instance's linear memory at 1 GiB.
const memoryLimitPages = 16384

// Engine runs the kdns core module (ABI v1, docs/abi.md): one instance per CPU, each fed the
// same config, snapshot and deltas. Queries share the instances; updates wait for the queries
// in flight and then reach every instance.
type Engine struct {
	runtime  wazero.Runtime
	compiled wazero.CompiledModule

	mu        sync.RWMutex // queries hold it shared, updates exclusively
	instances chan *instance
	all       []*instance

	// What a rebuilt instance is given again, in order.
	config   []byte
	snapshot []byte
	deltas   [][]byte
	deltaLen int

	ready    atomic.Bool
	traps    atomic.Uint64
	rebuilds atomic.Uint64
}

type instance struct {
	mod                                          api.Module
	alloc, free, configure, load, apply, resolve api.Function
	broken                                       bool
	// A buffer in the module's memory that holds each query, allocated once: the ABI lets
	// a host keep a buffer from kdns_alloc until it frees it.
	queryBuf uint32
}

// queryBufSize is the largest query a query buffer takes (a DNS message over TCP).
const queryBufSize = 65535

// NewEngine compiles the module and checks its ABI version.
func NewEngine(ctx context.Context, wasm []byte) (*Engine, error) {
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(true).WithMemoryLimitPages(memoryLimitPages))
	compiled, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("not a usable wasm module: %w", err)
	}
	e := &Engine{runtime: rt, compiled: compiled}
	n := runtime.GOMAXPROCS(0)
	e.instances = make(chan *instance, n)
	for i := 0; i < n; i++ {
		inst, err := e.instantiate(ctx)
		if err != nil {
			rt.Close(ctx)
			return nil, err
		}
		e.all = append(e.all, inst)
		e.instances <- inst
	}
	return e, nil
}

// Close frees the runtime and every instance.
func (e *Engine) Close(ctx context.Context) error { return e.runtime.Close(ctx) }

func (e *Engine) instantiate(ctx context.Context) (*instance, error) {
	mod, err := e.runtime.InstantiateModule(ctx, e.compiled, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		return nil, fmt.Errorf("cannot instantiate the wasm module: %w", err)
	}
	inst := &instance{mod: mod}
	fns := map[string]*api.Function{
		"kdns_alloc": &inst.alloc, "kdns_free": &inst.free, "kdns_configure": &inst.configure,
		"kdns_load": &inst.load, "kdns_apply": &inst.apply, "kdns_resolve": &inst.resolve,
	}
	for name, slot := range fns {
		if *slot = mod.ExportedFunction(name); *slot == nil {
			mod.Close(ctx)
			return nil, fmt.Errorf("the wasm module does not export %s (not a kdns ABI v1 module)", name)
		}
	}
	version := mod.ExportedFunction("kdns_abi_version")
	if version == nil {
		mod.Close(ctx)
		return nil, errors.New("the wasm module does not export kdns_abi_version (not a kdns module)")
	}
	res, err := version.Call(ctx)
	if err != nil || len(res) != 1 || uint32(res[0]) != 1 {
		mod.Close(ctx)
		return nil, fmt.Errorf("the wasm module speaks kdns ABI %v, this plugin speaks 1", res)
	}
	buf, err := inst.alloc.Call(ctx, queryBufSize)
	if err != nil || uint32(buf[0]) == 0 {
		mod.Close(ctx)
		return nil, fmt.Errorf("the wasm module cannot allocate a query buffer: %v", err)
	}
	inst.queryBuf = uint32(buf[0])
	return inst, nil
}

// call hands `input` to `fn` (configure, load or apply) and returns its status code.
func (inst *instance) call(ctx context.Context, fn api.Function, input []byte) (int32, error) {
	ptr, err := inst.put(ctx, input)
	if err != nil {
		return 0, err
	}
	res, err := fn.Call(ctx, uint64(ptr), uint64(len(input)))
	if err != nil {
		return 0, err
	}
	if _, err := inst.free.Call(ctx, uint64(ptr), uint64(len(input))); err != nil {
		return 0, err
	}
	return int32(res[0]), nil
}

func (inst *instance) put(ctx context.Context, input []byte) (uint32, error) {
	res, err := inst.alloc.Call(ctx, uint64(len(input)))
	if err != nil {
		return 0, err
	}
	ptr := uint32(res[0])
	if ptr == 0 && len(input) > 0 {
		return 0, errors.New("the wasm module is out of memory")
	}
	if !inst.mod.Memory().Write(ptr, input) {
		return 0, errors.New("the wasm module gave a buffer outside its memory")
	}
	return ptr, nil
}

// Kinds of update, and the export each goes to.
const (
	updateConfig = iota
	updateSnapshot
	updateDelta
)

// Update gives every instance a config, a snapshot or a delta. An update an instance rejects
// leaves every instance as it was before it (they all hold the same view).
func (e *Engine) Update(ctx context.Context, kind int, msg []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, inst := range e.all {
		fn := map[int]api.Function{updateConfig: inst.configure, updateSnapshot: inst.load, updateDelta: inst.apply}[kind]
		code, err := inst.call(ctx, fn, msg)
		if err == nil && code != 0 {
			if i > 0 {
				// Cannot happen with one module and one input; keep the instances equal anyway.
				e.rebuildAllLocked(ctx)
			}
			return fmt.Errorf("the kdns module rejected the update (code %d, see docs/abi.md)", code)
		}
		if err != nil {
			e.traps.Add(1)
			inst.broken = true
		}
	}
	switch kind {
	case updateConfig:
		e.config = msg
	case updateSnapshot:
		e.snapshot, e.deltas, e.deltaLen = msg, nil, 0
		e.ready.Store(true)
	case updateDelta:
		e.deltas = append(e.deltas, msg)
		e.deltaLen += len(msg)
	}
	for _, inst := range e.all {
		if inst.broken {
			e.rebuildLocked(ctx, inst)
		}
	}
	return nil
}

// HistoryLarge says the deltas kept for rebuilds outgrew the snapshot: time to ask the host
// for a fresh snapshot.
func (e *Engine) HistoryLarge() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.deltaLen > 2*len(e.snapshot)+(1<<20)
}

// Ready says whether a snapshot has arrived.
func (e *Engine) Ready() bool { return e.ready.Load() }

// Resolve answers one DNS query message; maxUDP is the UDP response limit or 0 over TCP.
// A nil answer with a nil error means "send nothing" (the input is not a query).
func (e *Engine) Resolve(ctx context.Context, query []byte, maxUDP int) ([]byte, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	inst := <-e.instances
	defer func() { e.instances <- inst }()
	answer, err := inst.resolveOnce(ctx, query, maxUDP)
	if err != nil {
		e.traps.Add(1)
		// Rebuild this instance from the history (under the shared lock: updates wait).
		fresh, rerr := e.rebuilt(context.Background())
		if rerr == nil {
			inst.mod.Close(context.Background())
			*inst = *fresh
			e.rebuilds.Add(1)
		} else {
			inst.broken = true
		}
		return nil, fmt.Errorf("the kdns module failed on this query: %w", err)
	}
	return answer, nil
}

func (inst *instance) resolveOnce(ctx context.Context, query []byte, maxUDP int) ([]byte, error) {
	if inst.broken {
		return nil, errors.New("instance unusable since an earlier failure")
	}
	if len(query) > queryBufSize || !inst.mod.Memory().Write(inst.queryBuf, query) {
		return nil, errors.New("the query does not fit the module's query buffer")
	}
	// Only this call gets the deadline: with CloseOnContextDone wazero watches a context that
	// can end, and a module past its deadline is closed (then rebuilt).
	ctx, cancel := context.WithTimeout(ctx, queryDeadline)
	defer cancel()
	res, err := inst.resolve.Call(ctx, uint64(inst.queryBuf), uint64(len(query)), uint64(maxUDP))
	if err != nil {
		return nil, err
	}
	packed := res[0]
	outPtr, outLen := uint32(packed>>32), uint32(packed)
	if packed == 0 {
		return nil, nil
	}
	out, ok := inst.mod.Memory().Read(outPtr, outLen)
	if !ok {
		return nil, errors.New("the wasm module answered outside its memory")
	}
	// Copy: the module owns that memory and reuses it on the next call.
	return append([]byte(nil), out...), nil
}

// rebuilt makes a new instance and replays the config, snapshot and deltas into it.
func (e *Engine) rebuilt(ctx context.Context) (*instance, error) {
	inst, err := e.instantiate(ctx)
	if err != nil {
		return nil, err
	}
	replay := []struct {
		fn  api.Function
		msg []byte
	}{{inst.configure, e.config}}
	if e.snapshot != nil {
		replay = append(replay, struct {
			fn  api.Function
			msg []byte
		}{inst.load, e.snapshot})
	}
	for _, d := range e.deltas {
		replay = append(replay, struct {
			fn  api.Function
			msg []byte
		}{inst.apply, d})
	}
	for _, r := range replay {
		if r.msg == nil {
			continue
		}
		if code, err := inst.call(ctx, r.fn, r.msg); err != nil || code != 0 {
			inst.mod.Close(ctx)
			return nil, fmt.Errorf("replaying into a new instance failed (code %d): %v", code, err)
		}
	}
	return inst, nil
}

func (e *Engine) rebuildLocked(ctx context.Context, inst *instance) {
	fresh, err := e.rebuilt(ctx)
	if err != nil {
		return
	}
	inst.mod.Close(ctx)
	*inst = *fresh
	e.rebuilds.Add(1)
}

func (e *Engine) rebuildAllLocked(ctx context.Context) {
	for _, inst := range e.all {
		e.rebuildLocked(ctx, inst)
	}
}

// Traps returns how many calls failed inside the module, and how many instances were rebuilt.
func (e *Engine) Traps() (traps, rebuilds uint64) { return e.traps.Load(), e.rebuilds.Load() }
