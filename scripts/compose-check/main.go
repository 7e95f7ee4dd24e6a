// Command compose-check loads a compose file with compose-go, the library that the docker
// compose CLI itself uses, once for each profile set given on the command line, and prints the
// services that set enables. It exits non-zero with the loader's own message when the file
// does not load, so CI catches a broken compose.yaml without a Docker engine.
//
// Usage:
//
//	compose-check [-file compose.yaml] [-env-file .env] [-json] [PROFILES ...]
//
// Each PROFILES argument is one profile set: a comma-separated list of profile names
// ("local", "gcp", "local,scale"), or "none" for the services that have no profile. With no
// argument, "none" is loaded.
//
// Interpolation follows docker compose: the process environment first, then the env file
// (.env beside the compose file when -env-file is not given). COMPOSE_PROFILES is ignored:
// the profile sets on the command line are the ones loaded.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// noProfile names the profile set with no profile: only services without `profiles:` run.
const noProfile = "none"

// result is what -json prints for one profile set: the set and the loaded project as
// compose-go normalizes it (the same model `docker compose config --format json` shows).
type result struct {
	Profiles []string        `json:"profiles"`
	Services []string        `json:"services"`
	Project  json.RawMessage `json:"project"`
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("compose-check", flag.ContinueOnError)
	flags.SetOutput(stderr)
	file := flags.String("file", "compose.yaml", "compose file to load")
	envFile := flags.String("env-file", "", "env file for interpolation (default: .env beside the compose file, if any)")
	asJSON := flags.Bool("json", false, "print one JSON document per profile set, one per line")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: compose-check [-file compose.yaml] [-env-file .env] [-json] [PROFILES ...]")
		fmt.Fprintln(stderr, "  PROFILES: comma-separated profile names, or \"none\" (the default)")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		return 2
	}
	sets := flags.Args()
	if len(sets) == 0 {
		sets = []string{noProfile}
	}

	ctx := context.Background()
	for _, set := range sets {
		profiles := parseProfiles(set)
		project, err := load(ctx, *file, *envFile, profiles)
		if err != nil {
			fmt.Fprintf(stderr, "compose-check: %s (profiles %q): %v\n", *file, set, err)
			return 1
		}
		services := project.ServiceNames()
		if !*asJSON {
			fmt.Fprintf(stdout, "%s: %s\n", set, strings.Join(services, " "))
			continue
		}
		if err := printJSON(stdout, profiles, services, project); err != nil {
			fmt.Fprintf(stderr, "compose-check: %v\n", err)
			return 1
		}
	}
	return 0
}

// parseProfiles turns one command-line profile set into profile names.
func parseProfiles(set string) []string {
	profiles := []string{}
	if set == noProfile {
		return profiles
	}
	for _, name := range strings.Split(set, ",") {
		if name = strings.TrimSpace(name); name != "" {
			profiles = append(profiles, name)
		}
	}
	return profiles
}

// load reads the compose file the way `docker compose --profile ... config` does.
func load(ctx context.Context, file, envFile string, profiles []string) (*types.Project, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, err
	}
	var envFiles []string
	if envFile != "" {
		envFiles = append(envFiles, envFile)
	}
	options, err := cli.NewProjectOptions(
		[]string{abs},
		cli.WithWorkingDirectory(filepath.Dir(abs)),
		cli.WithOsEnv,
		cli.WithEnvFiles(envFiles...),
		cli.WithDotEnv,
		cli.WithProfiles(profiles),
	)
	if err != nil {
		return nil, err
	}
	// LoadProject is what cli.ProjectFromOptions (now deprecated) calls.
	project, err := options.LoadProject(ctx)
	if err != nil {
		return nil, err
	}
	if len(project.Services) == 0 {
		return nil, errors.New("no service is enabled")
	}
	return project, nil
}

func printJSON(w io.Writer, profiles, services []string, project *types.Project) error {
	model, err := project.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encode project: %w", err)
	}
	line, err := json.Marshal(result{Profiles: profiles, Services: services, Project: model})
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	_, err = fmt.Fprintln(w, string(line))
	return err
}
