package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// server is a gRPC server under measurement, running as a process of its
// own, as the service runs in production, so that its CPU and memory are
// its own: the service (the users binary), the reference or the floor.
type server struct {
	Name      string
	Addr      string // gRPC, on loopback
	AdminAddr string // the service's metrics, on loopback; empty for the others
	cmd       *exec.Cmd
	logPath   string
	exited    chan struct{}
}

func (s *server) PID() int { return s.cmd.Process.Pid }

// buildService builds the users binary of the module in root as bin.
func buildService(ctx context.Context, root, bin string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/users")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/users: %w\n%s", err, out)
	}
	return nil
}

// adminSubjects declares the administrator the directory workloads call
// as, to the service and the reference alike.
var adminSubjects = "CLUSTER_ADMIN_SUBJECTS=" + subject(adminUser)

// startService runs bin serve against dbURL on free loopback ports, as
// the server name, with env added to its environment.
func startService(ctx context.Context, name, bin, dbURL, logDir string, env ...string) (*server, error) {
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	env = append([]string{"DATABASE_URL=" + dbURL, "ADMIN_ADDRESS=" + adminAddr, adminSubjects}, env...)
	s, err := startServer(ctx, name, logDir, []string{bin, "serve"}, env...)
	if err != nil {
		return nil, err
	}
	s.AdminAddr = adminAddr
	return s, nil
}

// startReference runs this program's reference server against dbURL.
func startReference(ctx context.Context, dbURL, logDir string) (*server, error) {
	return startSubcommand(ctx, referenceName, referenceArg, logDir, "DATABASE_URL="+dbURL, adminSubjects)
}

// startFloor runs this program's floor server.
func startFloor(ctx context.Context, logDir string) (*server, error) {
	return startSubcommand(ctx, floorName, floorArg, logDir)
}

// startSubcommand runs this program as the server subcommand arg.
func startSubcommand(ctx context.Context, name, arg, logDir string, env ...string) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return startServer(ctx, name, logDir, []string{self, arg}, env...)
}

// startServer runs argv with env added, serving gRPC on a free loopback
// port given as GRPC_ADDRESS, and waits until its health check says
// SERVING. Its log goes to a file in logDir, shown if it fails.
func startServer(ctx context.Context, name, logDir string, argv []string, env ...string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append(os.Environ(), env...), "GRPC_ADDRESS="+addr)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// If the bench dies, the server does not linger.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{Name: name, Addr: addr, cmd: cmd, logPath: logFile.Name(), exited: make(chan struct{})}
	go func() { cmd.Wait(); close(s.exited) }() //nolint:errcheck // the exit is reported through the log
	if err := s.waitServing(ctx); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%s: %w\n%s", name, err, s.logTail())
	}
	return s, nil
}

func (s *server) waitServing(ctx context.Context) error {
	cc, err := grpc.NewClient("passthrough:///"+s.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		callCtx, callCancel := context.WithTimeout(ctx, time.Second)
		resp, err := client.Check(callCtx, &healthpb.HealthCheckRequest{})
		callCancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-s.exited:
			return errors.New("exited during start-up")
		case <-ctx.Done():
			return fmt.Errorf("not SERVING after 30s (last: %v %v)", resp.GetStatus(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop asks the server to shut down and waits for it, killing it if it
// does not exit in time.
func (s *server) Stop() {
	s.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have exited already
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill() //nolint:errcheck // last resort
		<-s.exited
	}
}

func (s *server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	return lastLines(string(b), 20)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// serve is the server side of a server process this program runs as (the
// reference, the floor): it serves what register registers, and a health
// service that says SERVING, on $GRPC_ADDRESS until SIGTERM.
func serve(register func(*grpc.Server)) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lis, err := net.Listen("tcp", os.Getenv("GRPC_ADDRESS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s := grpc.NewServer()
	register(s)
	healthpb.RegisterHealthServer(s, health.NewServer())
	go func() {
		<-ctx.Done()
		s.Stop()
	}()
	if err := s.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
