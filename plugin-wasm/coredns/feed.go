package kdns

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
)

// watchMethod is the kdns.v1.SnapshotService stream (crates/proto/proto/kdns/v1/kdns.proto).
const watchMethod = "/kdns.v1.SnapshotService/Watch"

// rawCodec moves message bytes as they are: the plugin hands the Config, Snapshot and Delta
// inside each Update to the wasm module without decoding them itself, so it needs no
// generated protobuf code.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// parseUpdate reads a kdns.v1.Update: which kind it is and the message bytes it carries.
func parseUpdate(b []byte) (kind int, msg []byte, err error) {
	kind = -1
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, nil, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return 0, nil, protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return 0, nil, protowire.ParseError(n)
		}
		b = b[n:]
		switch num {
		case 1:
			kind, msg = updateConfig, v
		case 2:
			kind, msg = updateSnapshot, v
		case 3:
			kind, msg = updateDelta, v
		}
	}
	if kind < 0 {
		return 0, nil, errors.New("an update with no config, snapshot or delta")
	}
	// The message may be empty (all defaults); the ABI takes a zero length.
	return kind, append([]byte(nil), msg...), nil
}

// watch keeps the engine fed from the kdns host at addr until ctx ends, reconnecting with
// backoff; each new stream starts with the config and a whole snapshot.
func watch(ctx context.Context, addr string, engine *Engine) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		started := time.Now()
		err := watchOnce(ctx, addr, engine)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		log.Warningf("snapshot stream from %s ended: %v; reconnecting in %v (answers keep coming from the last view)", addr, err, backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func watchOnce(ctx context.Context, addr string, engine *Engine) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, watchMethod, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	request := []byte{} // an empty kdns.v1.WatchRequest
	if err := stream.SendMsg(&request); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	for {
		var buf []byte
		if err := stream.RecvMsg(&buf); err != nil {
			return err
		}
		kind, msg, err := parseUpdate(buf)
		if err != nil {
			return fmt.Errorf("bad update from the host: %w", err)
		}
		if err := engine.Update(context.Background(), kind, msg); err != nil {
			// A view the module rejects is not applied; start over from a fresh snapshot.
			return err
		}
		if kind == updateSnapshot {
			log.Infof("snapshot from %s loaded (%d bytes)", addr, len(msg))
		}
		if engine.HistoryLarge() {
			return errors.New("deltas kept for rebuilds outgrew the snapshot; asking for a fresh one")
		}
	}
}
