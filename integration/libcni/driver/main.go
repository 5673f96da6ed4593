// A small libcni client for the integration tests: it drives a conflist
// through github.com/containernetworking/cni/libcni the way containerd's
// go-cni does (AddNetworkList / CheckNetworkList / DelNetworkList with a
// RuntimeConf carrying the pod's CNI_ARGS and its annotations as the
// "io.kubernetes.cri.pod-annotations" capability), so the tests see what a
// real runtime sees: libcni's prevResult injection, its result decoding and
// version checks per plugin, its result cache, and the conversion of the
// chain's result to the current types.
//
// Built offline in GOPATH mode against Debian's golang-github-appc-cni-dev:
//
//	GO111MODULE=off GOPROXY=off GOPATH=/usr/share/gocode go build -o driver .
//
// Usage:
//
//	driver -cmd add|check|del -conflist FILE -cni-path DIR[:DIR] -cache-dir DIR \
//	  -id CONTAINER -netns PATH [-ifname eth0] [-arg K=V ...] [-annotation K=V ...]
//
// ADD prints the chain's result, converted to the current type (types100,
// as go-cni's Attach does), as JSON on stdout. CHECK and DEL print nothing.
// Any error goes to stderr with exit status 1: a line "libcni <cmd>: <error>"
// and, when the error is a plugin's CNI error, a line
// "cni-error: {"code":...,"msg":...,"details":...}".
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// The capability containerd's CRI plugin passes pod annotations under.
const podAnnotations = "io.kubernetes.cri.pod-annotations"

// pairs collects repeated -flag K=V values in order.
type pairs [][2]string

func (p *pairs) String() string {
	var s []string
	for _, kv := range *p {
		s = append(s, kv[0]+"="+kv[1])
	}
	return strings.Join(s, ",")
}

func (p *pairs) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want K=V, got %q", v)
	}
	*p = append(*p, [2]string{k, val})
	return nil
}

func main() {
	var (
		cmd         = flag.String("cmd", "", "add, check or del")
		conflist    = flag.String("conflist", "", "the conflist file")
		cniPath     = flag.String("cni-path", "/usr/lib/cni", "plugin directories, ':'-separated")
		cacheDir    = flag.String("cache-dir", "", "libcni's result cache directory")
		id          = flag.String("id", "", "container ID")
		netns       = flag.String("netns", "", "network namespace path (may be empty or gone for del)")
		ifname      = flag.String("ifname", "eth0", "interface name")
		args        pairs
		annotations pairs
	)
	flag.Var(&args, "arg", "a CNI_ARGS pair K=V (repeatable)")
	flag.Var(&annotations, "annotation", "a pod annotation K=V (repeatable)")
	flag.Parse()
	if err := run(*cmd, *conflist, *cniPath, *cacheDir, *id, *netns, *ifname, args, annotations); err != nil {
		fmt.Fprintf(os.Stderr, "libcni %s: %v\n", *cmd, err)
		var cniErr *types.Error
		if errors.As(err, &cniErr) {
			b, _ := json.Marshal(cniErr)
			fmt.Fprintf(os.Stderr, "cni-error: %s\n", b)
		}
		os.Exit(1)
	}
}

func run(cmd, conflist, cniPath, cacheDir, id, netns, ifname string, args, annotations pairs) error {
	if conflist == "" || cacheDir == "" || id == "" {
		return errors.New("-conflist, -cache-dir and -id are required")
	}
	list, err := libcni.ConfListFromFile(conflist)
	if err != nil {
		return fmt.Errorf("load %s: %w", conflist, err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(cniPath), cacheDir, nil)

	// as go-cni's Namespace.config: labels become Args, capabilities are
	// passed as they are (libcni keeps only those a plugin declares)
	ann := map[string]string{}
	for _, kv := range annotations {
		ann[kv[0]] = kv[1]
	}
	rt := &libcni.RuntimeConf{
		ContainerID:    id,
		NetNS:          netns,
		IfName:         ifname,
		Args:           args,
		CapabilityArgs: map[string]interface{}{podAnnotations: ann},
	}

	ctx := context.Background()
	switch cmd {
	case "add":
		r, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		// go-cni's Network.Attach: the result in the current types
		cur, err := types100.NewResultFromResult(r)
		if err != nil {
			return fmt.Errorf("convert the result to %s: %w", types100.ImplementedSpecVersion, err)
		}
		out, err := json.MarshalIndent(cur, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Printf("%s\n", out)
		return err
	case "check":
		return cni.CheckNetworkList(ctx, list, rt)
	case "del":
		return cni.DelNetworkList(ctx, list, rt)
	default:
		return fmt.Errorf("unknown -cmd %q (want add, check or del)", cmd)
	}
}
