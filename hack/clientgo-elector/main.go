// Command clientgo-elector is a real client-go leader elector (tools/leaderelection with a
// resourcelock.LeaseLock) for the interop tests in tests/interop.rs: it campaigns for the same
// Lease as a manager-operator ManagerConfig and shows, on stdout and through an optional hook,
// when it believes it leads.
//
// stdout carries one JSON object per line:
//
//	{"event":"started_leading","identity":"a","t":1700000000000}
//	{"event":"leading","identity":"a","token":3,"renewTime":"...","t":...}   every 100 ms
//	{"event":"new_leader","identity":"a","holder":"b","t":...}
//	{"event":"stopped_leading","identity":"a","t":...}
//	{"event":"exited","identity":"a","t":...}
//
// While leading, every 100 ms it GETs the Lease and, if the Lease still names it, prints a
// "leading" line whose token is the leaseTransitions it read, and POSTs
// {"holder":identity,"fencingToken":token,"source":"client-go"} to --hook-url when given.
//
// SIGTERM/SIGINT first stops that work (the loop finishes, an in-flight hook call completes),
// then cancels the elector's context, so with --release-on-cancel the Lease is released only
// after this process stopped acting as leader. klog writes to stderr.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

type options struct {
	kubeconfig      string
	namespace       string
	name            string
	identity        string
	leaseDuration   time.Duration
	renewDeadline   time.Duration
	retryPeriod     time.Duration
	releaseOnCancel bool
	hookURL         string
	interval        time.Duration
}

var outMu sync.Mutex

// emit prints one JSON line to stdout; "t" is the wall clock in unix milliseconds.
func emit(fields map[string]any) {
	fields["t"] = time.Now().UnixMilli()
	b, err := json.Marshal(fields)
	if err != nil {
		panic(err)
	}
	outMu.Lock()
	defer outMu.Unlock()
	_, _ = os.Stdout.Write(append(b, '\n'))
}

func main() {
	var o options
	klog.InitFlags(nil)
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (required)")
	flag.StringVar(&o.namespace, "namespace", "", "namespace of the Lease (required)")
	flag.StringVar(&o.name, "name", "", "name of the Lease (required)")
	flag.StringVar(&o.identity, "identity", "", "holder identity (required)")
	flag.DurationVar(&o.leaseDuration, "lease-duration", 15*time.Second, "leaseDuration")
	flag.DurationVar(&o.renewDeadline, "renew-deadline", 10*time.Second, "renewDeadline")
	flag.DurationVar(&o.retryPeriod, "retry-period", 2*time.Second, "retryPeriod")
	flag.BoolVar(&o.releaseOnCancel, "release-on-cancel", false, "release the Lease on SIGTERM")
	flag.StringVar(&o.hookURL, "hook-url", "", "POST {holder, fencingToken} here while leading")
	flag.DurationVar(&o.interval, "interval", 100*time.Millisecond, "how often to report while leading")
	flag.Parse()
	if o.kubeconfig == "" || o.namespace == "" || o.name == "" || o.identity == "" {
		fmt.Fprintln(os.Stderr, "--kubeconfig, --namespace, --name and --identity are required")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "clientgo-elector:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("loading %s: %w", o.kubeconfig, err)
	}
	// The elector keeps client-go's defaults (QPS 5, burst 10). The 10 GETs per second of the
	// reporting loop use their own client and rate limiter, or they would throttle the
	// elector's renewals.
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	reportCfg := rest.CopyConfig(cfg)
	reportCfg.QPS, reportCfg.Burst = 100, 200
	reportClient, err := kubernetes.NewForConfig(reportCfg)
	if err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: o.namespace, Name: o.name},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: o.identity},
	}
	hook := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{Proxy: nil}, // the hook is on loopback: never via a proxy
	}

	// electionCtx is the elector's; cancelling it releases the Lease (--release-on-cancel).
	electionCtx, cancelElection := context.WithCancel(context.Background())
	defer cancelElection()

	// Work started while leading; stopWork ends it before the elector is cancelled.
	var (
		mu       sync.Mutex
		stopping bool
		stopWork = make(chan struct{})
		work     sync.WaitGroup
		led      bool
	)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-signals
		emit(map[string]any{"event": "signal", "identity": o.identity, "signal": sig.String()})
		mu.Lock()
		stopping = true
		close(stopWork)
		mu.Unlock()
		work.Wait()
		cancelElection()
	}()

	lead := func(ctx context.Context) {
		defer work.Done()
		emit(map[string]any{"event": "started_leading", "identity": o.identity})
		ticker := time.NewTicker(o.interval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done(): // leadership lost (or the elector stopped)
				return
			case <-stopWork:
				return
			case <-ticker.C:
			}
			report(ctx, o, reportClient, hook)
		}
	}

	leaderelection.RunOrDie(electionCtx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		Name:            o.name,
		LeaseDuration:   o.leaseDuration,
		RenewDeadline:   o.renewDeadline,
		RetryPeriod:     o.retryPeriod,
		ReleaseOnCancel: o.releaseOnCancel,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				mu.Lock()
				if stopping {
					mu.Unlock()
					return
				}
				led = true
				work.Add(1)
				mu.Unlock()
				lead(ctx)
			},
			OnStoppedLeading: func() {
				mu.Lock()
				wasLeading := led
				mu.Unlock()
				if wasLeading {
					emit(map[string]any{"event": "stopped_leading", "identity": o.identity})
				}
			},
			OnNewLeader: func(holder string) {
				emit(map[string]any{"event": "new_leader", "identity": o.identity, "holder": holder})
			},
		},
	})
	// RunOrDie returns when leadership is lost too; wait for the lead loop to have stopped.
	work.Wait()
	emit(map[string]any{"event": "exited", "identity": o.identity})
	return nil
}

// report GETs the Lease and, if it still names this identity, prints a "leading" line and calls
// the hook with the leaseTransitions it read as the fencing token.
func report(ctx context.Context, o options, client kubernetes.Interface, hook *http.Client) {
	getCtx, cancel := context.WithTimeout(ctx, time.Second)
	lease, err := client.CoordinationV1().Leases(o.namespace).Get(getCtx, o.name, metav1.GetOptions{})
	cancel()
	if err != nil {
		emit(map[string]any{"event": "get_failed", "identity": o.identity, "error": err.Error()})
		return
	}
	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	if holder != o.identity {
		emit(map[string]any{"event": "not_holder", "identity": o.identity, "holder": holder})
		return
	}
	token := int32(0)
	if lease.Spec.LeaseTransitions != nil {
		token = *lease.Spec.LeaseTransitions
	}
	renew := ""
	if lease.Spec.RenewTime != nil {
		renew = lease.Spec.RenewTime.UTC().Format(metav1.RFC3339Micro)
	}
	emit(map[string]any{"event": "leading", "identity": o.identity, "token": token, "renewTime": renew})
	if o.hookURL == "" {
		return
	}
	body, _ := json.Marshal(map[string]any{
		"holder":       o.identity,
		"fencingToken": token,
		"source":       "client-go",
	})
	// ctx ends only when leadership is lost: on SIGTERM a call in flight completes first (the
	// elector is cancelled only after the lead loop returned).
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.hookURL, bytes.NewReader(body))
	if err != nil {
		emit(map[string]any{"event": "hook_failed", "identity": o.identity, "error": err.Error()})
		return
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hook.Do(req)
	if err != nil {
		emit(map[string]any{"event": "hook_failed", "identity": o.identity, "error": err.Error()})
		return
	}
	_ = resp.Body.Close()
}
