// Command modpublish publishes the Go modules of a git revision into a
// directory laid out as a module proxy (GOPROXY=file://DIR), at one
// version, so that they can be installed as users will install them once
// the release is tagged. `make release-check` runs it.
//
// Usage:
//
//	modpublish -out DIR -version vX.Y.Z [-repo .] [-rev HEAD] MODDIR...
//
// Each MODDIR is a directory of the repository holding a go.mod ("." for
// the root). The files are those of the revision, as `git archive` gives
// them (what a tag of that revision would publish: nothing uncommitted,
// nothing ignored); a module's zip leaves out nested modules, as the go
// command does, and a submodule without a LICENSE gets the root's. DIR gets
// <module>/@v/<version>.{zip,mod,info} and the version added to list.
package main

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	modzip "golang.org/x/mod/zip"
)

func main() {
	out := flag.String("out", "", "the proxy `directory` to write (created if missing)")
	version := flag.String("version", "", "the `version` to publish, vX.Y.Z")
	repo := flag.String("repo", ".", "the git repository's `directory`")
	rev := flag.String("rev", "HEAD", "the git `revision` to publish")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: modpublish -out DIR -version vX.Y.Z [-repo .] [-rev HEAD] MODDIR...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *out == "" || *version == "" || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*out, *version, *repo, *rev, flag.Args()); err != nil {
		fmt.Fprintf(os.Stderr, "modpublish: %v\n", err)
		os.Exit(1)
	}
}

func run(out, version, repo, rev string, dirs []string) error {
	if !semver.IsValid(version) || semver.Canonical(version) != version {
		return fmt.Errorf("version %q is not a canonical semantic version (vX.Y.Z)", version)
	}
	tree, err := os.MkdirTemp("", "modpublish-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tree)
	if err := extractRevision(repo, rev, tree); err != nil {
		return err
	}
	when, err := git(repo, "show", "-s", "--format=%cI", rev)
	if err != nil {
		return err
	}
	commitTime, err := time.Parse(time.RFC3339, strings.TrimSpace(string(when)))
	if err != nil {
		return fmt.Errorf("commit time of %s: %w", rev, err)
	}
	for _, d := range dirs {
		path, err := publish(out, tree, filepath.Clean(d), version, commitTime.UTC())
		if err != nil {
			return fmt.Errorf("%s: %w", d, err)
		}
		fmt.Printf("published %s@%s (from %s at %s)\n", path, version, d, rev)
	}
	return nil
}

// git runs git in dir and returns its standard output.
func git(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("git", append([]string{"-c", "core.autocrlf=input", "-c", "core.eol=lf"}, args...)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return b, nil
}

// extractRevision writes the files of rev, as git archive gives them, under
// dst.
func extractRevision(repo, rev, dst string) error {
	b, err := git(repo, "archive", "--format=zip", rev)
	if err != nil {
		return err
	}
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return fmt.Errorf("git archive of %s: %w", rev, err)
	}
	for _, f := range zr.File {
		if strings.HasSuffix(f.Name, "/") {
			continue
		}
		name := filepath.Join(dst, filepath.FromSlash(f.Name))
		if !strings.HasPrefix(name, dst+string(filepath.Separator)) {
			return fmt.Errorf("git archive of %s: bad file name %q", rev, f.Name)
		}
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			return err
		}
		if f.Mode()&os.ModeSymlink != 0 {
			continue // module zips hold no symbolic links
		}
		if err := writeFile(name, f); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(name string, f *zip.File) error {
	r, err := f.Open()
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, f.Mode().Perm()|0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
}

// publish writes the module in tree/dir into the proxy out and returns its
// path.
func publish(out, tree, dir, version string, when time.Time) (string, error) {
	src := filepath.Join(tree, dir)
	gomod, err := os.ReadFile(filepath.Join(src, "go.mod"))
	if err != nil {
		return "", err
	}
	mf, err := modfile.ParseLax("go.mod", gomod, nil)
	if err != nil {
		return "", err
	}
	if mf.Module == nil {
		return "", errors.New("go.mod has no module line")
	}
	m := module.Version{Path: mf.Module.Mod.Path, Version: version}
	if err := module.Check(m.Path, m.Version); err != nil {
		return "", err
	}
	if dir != "." {
		// As the go command does for a module in a subdirectory.
		lic := filepath.Join(src, "LICENSE")
		if _, err := os.Stat(lic); errors.Is(err, os.ErrNotExist) {
			if b, err := os.ReadFile(filepath.Join(tree, "LICENSE")); err == nil {
				if err := os.WriteFile(lic, b, 0o644); err != nil {
					return "", err
				}
			}
		}
	}
	esc, err := module.EscapePath(m.Path)
	if err != nil {
		return "", err
	}
	vdir := filepath.Join(out, filepath.FromSlash(esc), "@v")
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return "", err
	}
	var zb bytes.Buffer
	if err := modzip.CreateFromDir(&zb, m, src); err != nil {
		return "", err
	}
	info, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{version, when})
	if err != nil {
		return "", err
	}
	for name, b := range map[string][]byte{
		version + ".zip":  zb.Bytes(),
		version + ".mod":  gomod,
		version + ".info": info,
	} {
		if err := os.WriteFile(filepath.Join(vdir, name), b, 0o644); err != nil {
			return "", err
		}
	}
	return m.Path, addToList(filepath.Join(vdir, "list"), version)
}

// addToList adds version to the proxy's list file of a module.
func addToList(name, version string) error {
	b, err := os.ReadFile(name)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	versions := strings.Fields(string(b))
	if !slices.Contains(versions, version) {
		versions = append(versions, version)
	}
	semver.Sort(versions)
	return os.WriteFile(name, []byte(strings.Join(versions, "\n")+"\n"), 0o644)
}
