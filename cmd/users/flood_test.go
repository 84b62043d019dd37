package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	usersv1 "github.com/agynio/users/internal/gen/agynio/api/users/v1"
	"github.com/agynio/users/internal/server"
	"github.com/agynio/users/internal/testing/testdb"
)

// The flood: the worst request that fits the size limit, sent by many
// callers at once. A BatchGetUsers whose identity_ids are as many
// one-byte entries as fit in MaxRequestBytes, each the byte 0xff (never
// valid UTF-8), once cost a reply 28 times its size, a log line as long,
// and hundreds of MiB of memory under load.
const (
	floodCalls    = 256
	floodInFlight = 64

	// Bounds, far above what the service needs and far below the harm:
	// the chart's memory limit is 256 MiB.
	maxStatusBytes  = 2 << 10   // a status, message and details together
	maxLogLineBytes = 2 << 10   // one JSON log line
	maxRSSGrowth    = 64 << 20  // peak RSS over the RSS before the flood
	chartMemLimit   = 256 << 20 // helm/users values.yaml resources.limits.memory
)

// memoryFactor scales the memory bounds for the binary under test (see
// race_test.go).
var memoryFactor = 1

// worstBatch is a BatchGetUsersRequest of n one-byte entries of 0xff.
func worstBatch(n int) []byte {
	b := make([]byte, 0, 3*n)
	for range n {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte{0xff})
	}
	return b
}

// TestFloodOfWorstRequests sends floodCalls worst requests, floodInFlight
// at a time, and holds the server to small answers, short log lines and
// bounded memory.
func TestFloodOfWorstRequests(t *testing.T) {
	t.Parallel()
	p, addr := startServe(t, map[string]string{"DATABASE_URL": testdb.URL(t)})
	cc := dial(t, addr)
	entries := (server.MaxRequestBytes - 64) / 3 // room for gRPC's framing
	req := worstBatch(entries)
	if len(req) > server.MaxRequestBytes {
		t.Fatalf("request of %d bytes does not fit the limit of %d", len(req), server.MaxRequestBytes)
	}

	// One call first: the answer, and the memory of a server that has
	// served, so that the flood's growth is what is measured.
	first := invokeRaw(t, cc, req)
	wantFloodAnswer(t, first, entries)
	before := procStatusBytes(t, p, "VmRSS")

	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		worstStatus int
		failures    []string
	)
	calls := make(chan struct{}, floodCalls)
	for range floodCalls {
		calls <- struct{}{}
	}
	close(calls)
	for range floodInFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls {
				err := invokeRaw(t, cc, req)
				st := status.Convert(err)
				size := proto.Size(st.Proto())
				mu.Lock()
				worstStatus = max(worstStatus, size)
				if st.Code() != codes.InvalidArgument {
					failures = append(failures, st.String())
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d calls were not INVALID_ARGUMENT, e.g. %s", len(failures), floodCalls, failures[0])
	}

	peak := procStatusBytes(t, p, "VmHWM")
	logLine := longestLine(p.stdout.String())
	t.Logf("flood of %d requests of %d bytes, %d in flight: status %d bytes, longest log line %d bytes, RSS %.1f MiB before, peak %.1f MiB",
		floodCalls, len(req), floodInFlight, worstStatus, logLine, mib(before), mib(peak))

	if worstStatus > maxStatusBytes {
		t.Errorf("largest answer: %d bytes, want at most %d", worstStatus, maxStatusBytes)
	}
	if logLine > maxLogLineBytes {
		t.Errorf("longest log line: %d bytes, want at most %d", logLine, maxLogLineBytes)
	}
	if growth, bound := peak-before, maxRSSGrowth*memoryFactor; growth > bound {
		t.Errorf("peak RSS grew by %.1f MiB under the flood, want at most %.1f MiB", mib(growth), mib(bound))
	}
	if bound := chartMemLimit / 2 * memoryFactor; peak > bound {
		t.Errorf("peak RSS %.1f MiB, want at most %.1f MiB, well under the chart's limit of %.1f MiB", mib(peak), mib(bound), mib(chartMemLimit))
	}
}

// wantFloodAnswer checks that the worst request is refused by its length
// alone, with one violation.
func wantFloodAnswer(t *testing.T, err error, entries int) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("code %s (%s), want InvalidArgument", st.Code(), truncate(st.Message()))
	}
	want := fmt.Sprintf("identity_ids must have at most 100 entries, got %d", entries)
	if !strings.Contains(st.Message(), want) {
		t.Errorf("message %q does not say %q", truncate(st.Message()), want)
	}
}

func invokeRaw(t *testing.T, cc *grpc.ClientConn, req []byte) error {
	var reply []byte
	return cc.Invoke(rpcContext(t), usersv1.UsersService_BatchGetUsers_FullMethodName, req, &reply, grpc.ForceCodecV2(rawCodec{}))
}

// procStatusBytes reads one memory figure (VmRSS, VmHWM) of the running
// process from /proc, in bytes.
func procStatusBytes(t *testing.T, p *proc, field string) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("read the process's memory: %v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("%s: %q: %v", field, v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, p.cmd.Process.Pid)
	return 0
}

func longestLine(s string) int {
	n := 0
	for line := range strings.Lines(s) {
		n = max(n, len(line))
	}
	return n
}

func mib(b int) float64 { return float64(b) / (1 << 20) }

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// rawCodec sends and receives messages as the bytes given, so that a test
// can put on the wire what a well-behaved client library never would.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}
