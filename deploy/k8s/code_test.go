package k8s_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// modulePath is the module's import path; packages under it are read from
// the repository.
const modulePath = "github.com/wxcombine/orderworker"

// repoRoot is the repository root, seen from deploy/k8s.
const repoRoot = "../.."

// command is what the test knows of one cmd/<name> from its source.
type command struct {
	name string
	// env maps every environment variable the command reads to its default
	// ("" when none, or when the default is not a constant).
	env map[string]string
	// consts are the command's package-level string constants.
	consts map[string]string
	// source is the text of the command's and its repository imports'
	// non-test Go files, to look up literals such as "/readyz".
	source string
}

var commandCache = map[string]*command{}

var envName = regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$`)

// loadCommand reads cmd/<name>'s environment variables from its source:
//   - literal arguments of calls to getenv, Getenv or LookupEnv (a getenv
//     passed in, os.Getenv, os.LookupEnv, l.getenv);
//   - the first field of every element of a []setting table (the worker's
//     settings list, whose second field is the default).
//
// Defaults come from the setting table, or from or(getenv("X"), D) and
// cmp.Or(getenv("X"), D) with D a literal or a constant.
func loadCommand(t *testing.T, name string) *command {
	t.Helper()
	if c, ok := commandCache[name]; ok {
		return c
	}
	dir := filepath.Join(repoRoot, "cmd", name)
	files := parseDir(t, dir)
	if len(files) == 0 {
		t.Fatalf("cmd/%s has no Go files", name)
	}
	c := &command{name: name, env: map[string]string{}, consts: map[string]string{}}
	res := newResolver(t)
	for _, f := range files {
		res.addFileConsts(f, c.consts)
	}
	wrappers := findWrappers(files)
	for _, f := range files {
		imports := res.imports(f)
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.CallExpr:
				if key, ok := getenvKey(x); ok {
					if _, seen := c.env[key]; !seen {
						c.env[key] = ""
					}
					return true
				}
				if params, ok := wrappers[calleeName(x)]; ok && len(x.Args) > 0 {
					key, ok := res.value(x.Args[0], c.consts, imports)
					if ok && envName.MatchString(key) {
						if _, seen := c.env[key]; !seen {
							c.env[key] = ""
						}
						// get(k, def): the second argument is the default.
						if params >= 2 && len(x.Args) >= 2 {
							if def, ok := res.value(x.Args[1], c.consts, imports); ok && def != "" {
								c.env[key] = def
							}
						}
					}
					return true
				}
				if isOrCall(x) && len(x.Args) == 2 {
					if call, ok := x.Args[0].(*ast.CallExpr); ok {
						if key, ok := getenvKey(call); ok {
							if def, ok := res.value(x.Args[1], c.consts, imports); ok {
								c.env[key] = def
							}
						}
					}
				}
			case *ast.CompositeLit:
				arr, ok := x.Type.(*ast.ArrayType)
				if !ok {
					return true
				}
				if id, ok := arr.Elt.(*ast.Ident); !ok || id.Name != "setting" {
					return true
				}
				for _, el := range x.Elts {
					lit, ok := el.(*ast.CompositeLit)
					if !ok || len(lit.Elts) < 2 {
						continue
					}
					key, ok := res.value(lit.Elts[0], c.consts, imports)
					if !ok || !envName.MatchString(key) {
						continue
					}
					def, _ := res.value(lit.Elts[1], c.consts, imports)
					c.env[key] = def
				}
			}
			return true
		})
	}
	// The source text of the command and of the repository packages it
	// imports, for literal look-ups.
	var sb strings.Builder
	seen := map[string]bool{}
	var add func(dir string)
	add = func(dir string) {
		if seen[dir] {
			return
		}
		seen[dir] = true
		for _, f := range parseDir(t, dir) {
			sb.WriteString(res.text[f])
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if rest, ok := strings.CutPrefix(p, modulePath+"/"); ok {
					add(filepath.Join(repoRoot, rest))
				}
			}
		}
	}
	add(dir)
	c.source = sb.String()
	commandCache[name] = c
	return c
}

// calleeName answers f of f(…) or x.f(…).
func calleeName(call *ast.CallExpr) string {
	switch f := call.Fun.(type) {
	case *ast.Ident:
		return f.Name
	case *ast.SelectorExpr:
		return f.Sel.Name
	}
	return ""
}

// findWrappers answers the functions (declared, methods, or closures
// assigned to a name) that pass their first string parameter to getenv or
// to another wrapper, with their parameter counts: get(k, def),
// l.str(k), l.duration(k) → l.str(k) → l.getenv(k).
func findWrappers(files []*ast.File) map[string]int {
	type fn struct {
		name   string
		params []string
		body   *ast.BlockStmt
	}
	var fns []fn
	paramNames := func(ft *ast.FuncType) []string {
		var out []string
		for _, f := range ft.Params.List {
			for _, n := range f.Names {
				out = append(out, n.Name)
			}
		}
		return out
	}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.FuncDecl:
				if x.Body != nil {
					fns = append(fns, fn{x.Name.Name, paramNames(x.Type), x.Body})
				}
			case *ast.AssignStmt:
				if len(x.Lhs) == 1 && len(x.Rhs) == 1 {
					id, ok1 := x.Lhs[0].(*ast.Ident)
					lit, ok2 := x.Rhs[0].(*ast.FuncLit)
					if ok1 && ok2 {
						fns = append(fns, fn{id.Name, paramNames(lit.Type), lit.Body})
					}
				}
			}
			return true
		})
	}
	wrappers := map[string]int{}
	for changed := true; changed; {
		changed = false
		for _, f := range fns {
			if _, done := wrappers[f.name]; done || len(f.params) == 0 || f.name == "getenv" {
				continue
			}
			first := f.params[0]
			ast.Inspect(f.body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				name := calleeName(call)
				_, isWrapper := wrappers[name]
				if name != "getenv" && name != "Getenv" && name != "LookupEnv" && !isWrapper {
					return true
				}
				if id, ok := call.Args[0].(*ast.Ident); ok && id.Name == first {
					wrappers[f.name] = len(f.params)
					changed = true
					return false
				}
				return true
			})
		}
	}
	return wrappers
}

// getenvKey answers the literal key of getenv("X"), os.Getenv("X"),
// os.LookupEnv("X") or l.getenv("X").
func getenvKey(call *ast.CallExpr) (string, bool) {
	var fn string
	switch f := call.Fun.(type) {
	case *ast.Ident:
		fn = f.Name
	case *ast.SelectorExpr:
		fn = f.Sel.Name
	default:
		return "", false
	}
	if fn != "getenv" && fn != "Getenv" && fn != "LookupEnv" {
		return "", false
	}
	if len(call.Args) != 1 {
		return "", false
	}
	lit, ok := call.Args[0].(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	if err != nil || !envName.MatchString(s) {
		return "", false
	}
	return s, true
}

func isOrCall(call *ast.CallExpr) bool {
	switch f := call.Fun.(type) {
	case *ast.Ident:
		return f.Name == "or"
	case *ast.SelectorExpr:
		return f.Sel.Name == "Or"
	}
	return false
}

var fset = token.NewFileSet()

var parsedDirs = map[string][]*ast.File{}

// parseDir parses the non-test Go files of dir.
func parseDir(t *testing.T, dir string) []*ast.File {
	t.Helper()
	if fs, ok := parsedDirs[dir]; ok {
		return fs
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	var files []*ast.File
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		src, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), src, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("parse %s: %v", n, err)
		}
		sourceText[f] = string(src)
		files = append(files, f)
	}
	parsedDirs[dir] = files
	return files
}

var sourceText = map[*ast.File]string{}

// resolver evaluates constant string expressions across the repository's
// packages: literals, constants, pkg.Const and concatenations.
type resolver struct {
	t    *testing.T
	pkgs map[string]map[string]string // import path → constants
	text map[*ast.File]string
}

func newResolver(t *testing.T) *resolver {
	return &resolver{t: t, pkgs: map[string]map[string]string{}, text: sourceText}
}

// imports maps a file's import names to import paths.
func (r *resolver) imports(f *ast.File) map[string]string {
	m := map[string]string{}
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		name := p[strings.LastIndex(p, "/")+1:]
		if imp.Name != nil {
			name = imp.Name.Name
		}
		m[name] = p
	}
	return m
}

// addFileConsts adds f's package-level string constants to consts.
func (r *resolver) addFileConsts(f *ast.File, consts map[string]string) {
	imports := r.imports(f)
	// Two passes resolve constants defined from later ones.
	for range 2 {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if v, ok := r.value(vs.Values[i], consts, imports); ok {
							consts[n.Name] = v
						}
					}
				}
			}
		}
	}
}

// pkgConsts answers the string constants of a repository package.
func (r *resolver) pkgConsts(path string) map[string]string {
	if c, ok := r.pkgs[path]; ok {
		return c
	}
	c := map[string]string{}
	r.pkgs[path] = c
	rest, ok := strings.CutPrefix(path, modulePath+"/")
	if !ok {
		return c
	}
	files := parseDir(r.t, filepath.Join(repoRoot, rest))
	for _, f := range files {
		r.addFileConsts(f, c)
	}
	for _, f := range files { // constants defined in a later file
		r.addFileConsts(f, c)
	}
	return c
}

// value evaluates e as a constant string.
func (r *resolver) value(e ast.Expr, consts map[string]string, imports map[string]string) (string, bool) {
	switch x := e.(type) {
	case *ast.BasicLit:
		if x.Kind != token.STRING {
			return x.Value, x.Kind == token.INT
		}
		s, err := strconv.Unquote(x.Value)
		return s, err == nil
	case *ast.Ident:
		v, ok := consts[x.Name]
		return v, ok
	case *ast.SelectorExpr:
		pkg, ok := x.X.(*ast.Ident)
		if !ok {
			return "", false
		}
		path, ok := imports[pkg.Name]
		if !ok {
			return "", false
		}
		v, ok := r.pkgConsts(path)[x.Sel.Name]
		return v, ok
	case *ast.BinaryExpr:
		if x.Op != token.ADD {
			return "", false
		}
		a, ok1 := r.value(x.X, consts, imports)
		b, ok2 := r.value(x.Y, consts, imports)
		return a + b, ok1 && ok2
	case *ast.ParenExpr:
		return r.value(x.X, consts, imports)
	}
	return "", false
}

// imageCommands answers the commands deploy/image/build.sh builds, by
// binary name.
func imageCommands(t *testing.T) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "image", "build.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^CMDS="([^"]*)"`).FindSubmatch(raw)
	if m == nil {
		t.Fatal(`deploy/image/build.sh has no CMDS="…" line`)
	}
	out := map[string]bool{}
	for _, p := range strings.Fields(string(m[1])) {
		out[filepath.Base(p)] = true
		if _, err := os.Stat(filepath.Join(repoRoot, p)); err != nil {
			t.Errorf("deploy/image/build.sh builds %s, which does not exist", p)
		}
	}
	return out
}

func TestLoadCommand(t *testing.T) {
	// The extraction itself must find what the services are known to read;
	// an empty result would make every later check vacuous.
	tests := []struct {
		cmd  string
		want map[string]string // subset of env with defaults
	}{
		{"worker", map[string]string{"NATS_URL": "nats://127.0.0.1:4222", "ADMIN_ADDR": "127.0.0.1:8081", "WECHAT_MERCHANT_DIR": "/etc/orderworker/merchants", "WECHAT_MERCHANTS": ""}},
		{"notifier", map[string]string{"NATS_URL": "nats://127.0.0.1:4222", "HTTP_ADDR": "127.0.0.1:8080", "ADMIN_ADDR": "127.0.0.1:8082", "WECHAT_MERCHANT_DIR": "/etc/orderworker/merchants"}},
		{"deadletter", map[string]string{"NATS_URL": "", "SUBJECT_PREFIX": ""}},
	}
	for _, tt := range tests {
		c := loadCommand(t, tt.cmd)
		for k, want := range tt.want {
			got, ok := c.env[k]
			if !ok {
				t.Errorf("cmd/%s: %s not found among the variables it reads %v", tt.cmd, k, keys(c.env))
				continue
			}
			if want != "" && got != want {
				t.Errorf("cmd/%s: default of %s = %q, want %q", tt.cmd, k, got, want)
			}
		}
	}
}
