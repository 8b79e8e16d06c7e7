// Command kindcheck checks a kind cluster config (the repository's kind-config.yaml)
// the way `kind create cluster --config FILE` would read it, without Docker:
//
//	go run . FILE
//
// It decodes FILE as kind v0.33.0 does (pkg/internal/apis/config/encoding: the
// apiVersion/kind are read first, then the file is decoded into the public
// v1alpha4.Cluster with go.yaml.in/yaml/v3 and KnownFields(true), so an unknown or
// misspelt field is an error, as are the custom decoders' checks of a port mapping's
// protocol and a mount's propagation), applies kind's public defaults
// (v1alpha4.SetDefaultsCluster), then re-states kind's validation, which is internal
// to kind (pkg/internal/apis/config/validate.go, run by `kind create cluster` only
// after it has found a container runtime), and finally checks the project's own
// rules: the router's and the git receiver's ports are published and containerd
// reads registry settings from /etc/containerd/certs.d (README.md, "On kind").
//
// It exits 0 and prints a one-line summary when FILE passes, or exits 1 with a message
// naming the offending field, line or value.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"

	toml "github.com/pelletier/go-toml"
	yaml "go.yaml.in/yaml/v3"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
)

// The ports the project needs published on the host, each to the same port on the node:
// the router (hostNetwork) and the git receiver's SSH (hostNetwork).
var requiredPorts = []struct {
	port int32
	what string
}{
	{80, "the router's HTTP port"},
	{443, "the router's HTTPS port"},
	{2222, "the git receiver's SSH port"},
}

const (
	criPlugin        = "io.containerd.grpc.v1.cri"
	registryConfPath = "/etc/containerd/certs.d"
)

func main() {
	if len(os.Args) != 2 || strings.HasPrefix(os.Args[1], "-") {
		fmt.Fprintln(os.Stderr, "usage: kindcheck FILE   (checks a kind v1alpha4 Cluster config)")
		os.Exit(2)
	}
	path := os.Args[1]
	raw, err := os.ReadFile(path)
	if err != nil {
		fail(path, err)
	}
	cfg, err := decode(raw)
	if err != nil {
		fail(path, withSourceLines(err, raw))
	}
	v1alpha4.SetDefaultsCluster(cfg)
	if errs := append(validate(cfg), projectRules(cfg)...); len(errs) > 0 {
		fail(path, errors.Join(errs...))
	}
	fmt.Printf("%s: ok: %s %s, %d node(s), host ports 80, 443, 2222 published, containerd config_path %s\n",
		path, cfg.APIVersion, cfg.Kind, len(cfg.Nodes), registryConfPath)
}

func fail(path string, err error) {
	fmt.Fprintf(os.Stderr, "kindcheck: %s: %v\n", path, err)
	os.Exit(1)
}

// decode is kind's encoding.Parse for v1alpha4 (same decoder, same strictness, same
// messages), stopping before kind's internal conversion.
func decode(raw []byte) (*v1alpha4.Cluster, error) {
	var tm struct {
		Kind       string `yaml:"kind,omitempty"`
		APIVersion string `yaml:"apiVersion,omitempty"`
	}
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		return nil, fmt.Errorf("could not determine kind / apiVersion for config: %w", err)
	}
	if tm.APIVersion != "kind.x-k8s.io/v1alpha4" {
		return nil, fmt.Errorf("unknown apiVersion: %s (want kind.x-k8s.io/v1alpha4)", tm.APIVersion)
	}
	if tm.Kind != "Cluster" {
		return nil, fmt.Errorf("unknown kind %s for apiVersion: %s", tm.Kind, tm.APIVersion)
	}
	d := yaml.NewDecoder(bytes.NewReader(raw))
	d.KnownFields(true)
	cfg := &v1alpha4.Cluster{}
	if err := d.Decode(cfg); err != nil {
		return nil, fmt.Errorf("unable to decode config: %w", err)
	}
	// kind reads the first YAML document and ignores the rest: a second one would be
	// silently dropped, so it is refused here (a project rule, not kind's).
	var rest yaml.Node
	if err := d.Decode(&rest); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document: kind reads only the first")
	}
	return cfg, nil
}

var lineRE = regexp.MustCompile(`line (\d+)`)

// withSourceLines appends the lines of raw that err's message points at, so a message
// such as "line 9: cannot unmarshal !!str `eighty` into int32" also shows the field.
func withSourceLines(err error, raw []byte) error {
	lines := strings.Split(string(raw), "\n")
	var b strings.Builder
	seen := map[int]bool{}
	for _, m := range lineRE.FindAllStringSubmatch(err.Error(), -1) {
		n, _ := strconv.Atoi(m[1])
		if n < 1 || n > len(lines) || seen[n] {
			continue
		}
		seen[n] = true
		fmt.Fprintf(&b, "\n  %4d | %s", n, lines[n-1])
	}
	if b.Len() == 0 {
		return err
	}
	return fmt.Errorf("%w%s", err, b.String())
}

// kind's cluster name pattern (validate.go); an empty name becomes "kind" or --name.
var validNameRE = regexp.MustCompile(`^[a-z0-9.-]+$`)

// validate re-states kind's validation (sigs.k8s.io/kind/pkg/internal/apis/config,
// Cluster.Validate and Node.Validate), which public packages cannot reach, for a
// defaulted v1alpha4.Cluster, slightly stricter where marked "Not kind's".
func validate(c *v1alpha4.Cluster) []error {
	var errs []error
	if c.Name != "" && !validNameRE.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("name: %q is not a valid cluster name, cluster names must match `%s`", c.Name, validNameRE))
	}
	n := c.Networking
	if n.APIServerPort != 0 {
		if err := validatePort(n.APIServerPort); err != nil {
			errs = append(errs, fmt.Errorf("networking.apiServerPort: %w", err))
		}
	}
	switch n.IPFamily {
	case v1alpha4.IPv4Family, v1alpha4.IPv6Family, v1alpha4.DualStackFamily:
	default:
		errs = append(errs, fmt.Errorf("networking.ipFamily: invalid ipFamily: %s", n.IPFamily))
	}
	if err := validateSubnets(n.PodSubnet, n.IPFamily); err != nil {
		errs = append(errs, fmt.Errorf("networking.podSubnet: %w", err))
	}
	if err := validateSubnets(n.ServiceSubnet, n.IPFamily); err != nil {
		errs = append(errs, fmt.Errorf("networking.serviceSubnet: %w", err))
	}
	switch n.KubeProxyMode {
	case v1alpha4.IPTablesProxyMode, v1alpha4.IPVSProxyMode, v1alpha4.NFTablesProxyMode, "none": // "none": kind's internal NoneProxyMode
	default:
		errs = append(errs, fmt.Errorf("networking.kubeProxyMode: invalid kubeProxyMode: %s", n.KubeProxyMode))
	}

	controlPlanes := 0
	for i, node := range c.Nodes {
		at := fmt.Sprintf("nodes[%d]", i)
		switch node.Role {
		case v1alpha4.ControlPlaneRole:
			controlPlanes++
		case v1alpha4.WorkerRole:
		default:
			errs = append(errs, fmt.Errorf("%s.role: %q is not a valid node role", at, node.Role))
		}
		if node.Image == "" {
			errs = append(errs, fmt.Errorf("%s.image: image is a required field", at))
		}
		for j, m := range node.ExtraPortMappings {
			pat := fmt.Sprintf("%s.extraPortMappings[%d]", at, j)
			if err := validatePort(m.HostPort); err != nil {
				errs = append(errs, fmt.Errorf("%s.hostPort: %w", pat, err))
			}
			if err := validatePort(m.ContainerPort); err != nil {
				errs = append(errs, fmt.Errorf("%s.containerPort: %w", pat, err))
			}
			// Not kind's: kind lets containerPort be left out (0), which publishes
			// nothing useful, so a mapping here must name the node's port.
			if m.ContainerPort <= 0 {
				errs = append(errs, fmt.Errorf("%s.containerPort: missing (a port mapping must name the node's port)", pat))
			}
		}
		if err := validatePortMappings(node.ExtraPortMappings); err != nil {
			errs = append(errs, fmt.Errorf("%s.extraPortMappings: invalid portMapping: %w", at, err))
		}
	}
	if controlPlanes < 1 {
		errs = append(errs, fmt.Errorf("nodes: must have at least one %s node", v1alpha4.ControlPlaneRole))
	}
	return errs
}

// validatePort: -1 asks the container runtime for a port; kind allows 0 too.
func validatePort(port int32) error {
	if port < -1 || port > 65535 {
		return fmt.Errorf("invalid port number: %d", port)
	}
	return nil
}

// validatePortMappings refuses two mappings of the same host port and protocol on the
// same listen address, or on any address when one of them listens on all of them
// (kind's check, slightly stricter about an unset protocol).
func validatePortMappings(ms []v1alpha4.PortMapping) error {
	bound := map[string][]string{} // "port/protocol" -> listen addresses
	for _, m := range ms {
		if m.HostPort == -1 || m.HostPort == 0 {
			continue // a random host port each: duplicates are fine
		}
		addr := "0.0.0.0"
		if m.ListenAddress != "" {
			ip := net.ParseIP(m.ListenAddress)
			if ip == nil {
				return fmt.Errorf("invalid listen address: %s", m.ListenAddress)
			}
			if !ip.Equal(net.IPv6unspecified) {
				addr = ip.String()
			}
		}
		// Not kind's: kind's own check keys an unset protocol apart from TCP; its providers then
		// publish both as TCP, so they are one here.
		protocol := m.Protocol
		if protocol == "" {
			protocol = v1alpha4.PortMappingProtocolTCP
		}
		key := fmt.Sprintf("%d/%s", m.HostPort, protocol)
		for _, other := range bound[key] {
			if other == addr || other == "0.0.0.0" || addr == "0.0.0.0" {
				return fmt.Errorf("port mapping with same listen address, port and protocol already configured: %s:%s", addr, key)
			}
		}
		bound[key] = append(bound[key], addr)
	}
	return nil
}

func validateSubnets(subnets string, family v1alpha4.ClusterIPFamily) error {
	var cidrs []*net.IPNet
	for _, s := range strings.Split(subnets, ",") {
		_, cidr, err := net.ParseCIDR(s)
		if err != nil {
			return fmt.Errorf("failed to parse cidr value:%q with error: %v", s, err)
		}
		cidrs = append(cidrs, cidr)
	}
	v4 := 0
	for _, c := range cidrs {
		if c.IP.To4() != nil {
			v4++
		}
	}
	switch {
	case family == v1alpha4.DualStackFamily && (len(cidrs) > 2 || len(cidrs) == 2 && v4 != 1):
		return errors.New("expected one (IPv4 or IPv6) CIDR or two CIDRs from each family for dual-stack networking")
	case family != v1alpha4.DualStackFamily && len(cidrs) > 1:
		return errors.New("only one CIDR allowed for single-stack networking")
	case family == v1alpha4.IPv4Family && v4 == 0:
		return errors.New("expected IPv4 CIDR for IPv4 family")
	case family == v1alpha4.IPv6Family && v4 != 0:
		return errors.New("expected IPv6 CIDR for IPv6 family")
	}
	return nil
}

// projectRules are this project's, not kind's (README.md, "On kind").
func projectRules(c *v1alpha4.Cluster) []error {
	var errs []error
	// The router and the git receiver listen on the node's own ports (hostNetwork), so
	// each must be published on the host, to the same port, over TCP. They are looked for
	// on the control-plane nodes: with workers, which node runs them is up to the
	// scheduler, and this config has none.
	for _, want := range requiredPorts {
		found := false
		for _, node := range c.Nodes {
			if node.Role != v1alpha4.ControlPlaneRole {
				continue
			}
			for _, m := range node.ExtraPortMappings {
				if m.ContainerPort == want.port && m.HostPort == want.port &&
					(m.Protocol == "" || m.Protocol == v1alpha4.PortMappingProtocolTCP) {
					found = true
				}
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf(
				"nodes[].extraPortMappings: no mapping of hostPort %d to containerPort %d (TCP) on a control-plane node: %s (hostNetwork) is not published",
				want.port, want.port, want.what))
		}
	}

	// The local registry (localhost:5001) is configured in /etc/containerd/certs.d, as
	// kind documents. Patches are read with kind's own TOML library and merged in order
	// as kind merges them: the last one that sets config_path wins. (JSON 6902 patches
	// of the containerd config are not followed.)
	configPath, setBy := "", -1
	for i, patch := range c.ContainerdConfigPatches {
		tree, err := toml.LoadBytes([]byte(patch))
		if err != nil {
			errs = append(errs, fmt.Errorf("containerdConfigPatches[%d]: not TOML: %v", i, err))
			continue
		}
		if v := tree.GetPath([]string{"plugins", criPlugin, "registry", "config_path"}); v != nil {
			s, _ := v.(string)
			configPath, setBy = s, i
		}
	}
	switch {
	case setBy < 0:
		errs = append(errs, fmt.Errorf(
			`containerdConfigPatches: none sets [plugins.%q.registry] config_path = %q (the local registry's hosts.toml lives there)`,
			criPlugin, registryConfPath))
	case configPath != registryConfPath:
		errs = append(errs, fmt.Errorf(
			`containerdConfigPatches[%d]: [plugins.%q.registry] config_path is %q, want %q`,
			setBy, criPlugin, configPath, registryConfPath))
	}
	return errs
}
