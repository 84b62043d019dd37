package chart

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"sigs.k8s.io/yaml"

	"github.com/agynio/users/tools/deploy/internal/repo"
)

func readme(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(repo.Path(t, "helm", "users", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(src)
}

// schemaNode is the part of values.schema.json the walk below reads.
type schemaNode struct {
	Properties map[string]schemaNode `json:"properties"`
}

// TestValuesAreDocumented: values.yaml, values.schema.json and the README's
// table name the same keys. A key documented is a value that is not an
// object the schema describes property by property (those are walked
// into); free-form objects such as resources are documented whole.
func TestValuesAreDocumented(t *testing.T) {
	t.Parallel()
	var schema schemaNode
	src, err := os.ReadFile(repo.Path(t, "helm", "users", "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(src, &schema); err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	src, err = os.ReadFile(repo.Path(t, "helm", "users", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(src, &values); err != nil {
		t.Fatal(err)
	}

	var keys []string
	var walk func(prefix string, values map[string]any, schema schemaNode)
	walk = func(prefix string, values map[string]any, schema schemaNode) {
		for name := range schema.Properties {
			if _, ok := values[name]; !ok && name != "global" {
				t.Errorf("values.schema.json has %s%s, values.yaml has no default for it", prefix, name)
			}
		}
		for name, v := range values {
			sub, ok := schema.Properties[name]
			if !ok {
				t.Errorf("values.yaml has %s%s, values.schema.json does not: it would refuse it", prefix, name)
				continue
			}
			if m, isMap := v.(map[string]any); isMap && len(sub.Properties) > 0 {
				walk(prefix+name+".", m, sub)
				continue
			}
			keys = append(keys, prefix+name)
		}
	}
	walk("", values, schema)

	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)` \\|").FindAllStringSubmatch(readme(t), -1) {
		documented = append(documented, m[1])
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(documented, k) {
			t.Errorf("README.md's values table lacks %s", k)
		}
	}
	for _, k := range documented {
		if !slices.Contains(keys, k) {
			t.Errorf("README.md's values table has %s, which values.yaml does not", k)
		}
	}
}

// TestReadmeTerraform: the bootstrap registration example parses as
// Terraform's HCL and is formatted as terraform fmt would leave it
// (terraform fmt is hclwrite.Format), so that it can be pasted as is.
// Terraform itself is not needed.
func TestReadmeTerraform(t *testing.T) {
	t.Parallel()
	blocks := regexp.MustCompile("(?s)```hcl\n(.*?)```").FindAllStringSubmatch(readme(t), -1)
	if len(blocks) == 0 {
		t.Fatal("no ```hcl block in README.md")
	}
	for i, b := range blocks {
		src := []byte(b[1])
		f, diags := hclsyntax.ParseConfig(src, "README.md", hcl.InitialPos)
		if diags.HasErrors() {
			t.Errorf("hcl block %d: %v", i+1, diags)
			continue
		}
		if formatted := hclwrite.Format(src); !bytes.Equal(formatted, src) {
			t.Errorf("hcl block %d is not formatted as terraform fmt would; formatted:\n%s", i+1, formatted)
		}
		want := []string{
			`variable "users_chart_version"`, `variable "users_image_tag"`, `variable "users_db_password"`, `variable "users_db_pvc_size"`,
			`"argocd.argoproj.io/sync-wave" = "8"`, `"argocd.argoproj.io/sync-wave" = "17"`,
			"postgresql://users:%s@users-db:5432/users",
		}
		for _, w := range want {
			if !strings.Contains(b[1], w) {
				t.Errorf("hcl block %d lacks %s", i+1, w)
			}
		}
		body := f.Body.(*hclsyntax.Body)
		if len(body.Blocks) == 0 {
			t.Errorf("hcl block %d has no block", i+1)
		}
	}
}

// TestReadmeTerraformKeepsSecretsOutOfApplications: no variable declared
// sensitive, and no Secret's data, reaches an Argo CD Application's Helm
// values, directly or through locals (anyone who can read the Application
// can read its values); each Application takes its credentials from a
// Secret Terraform writes instead, by name.
func TestReadmeTerraformKeepsSecretsOutOfApplications(t *testing.T) {
	t.Parallel()
	blocks := regexp.MustCompile("(?s)```hcl\n(.*?)```").FindAllStringSubmatch(readme(t), -1)
	if len(blocks) == 0 {
		t.Fatal("no ```hcl block in README.md")
	}
	for i, b := range blocks {
		f, diags := hclsyntax.ParseConfig([]byte(b[1]), "README.md", hcl.InitialPos)
		if diags.HasErrors() {
			t.Fatalf("hcl block %d: %v", i+1, diags)
		}
		body := f.Body.(*hclsyntax.Body)
		sensitive := map[string]bool{}
		locals := map[string]hclsyntax.Expression{}
		for _, blk := range body.Blocks {
			switch {
			case blk.Type == "variable" && len(blk.Labels) == 1:
				if a, ok := blk.Body.Attributes["sensitive"]; ok {
					if v, diags := a.Expr.Value(nil); !diags.HasErrors() && v.True() {
						sensitive[blk.Labels[0]] = true
					}
				}
			case blk.Type == "locals":
				for name, a := range blk.Body.Attributes {
					locals[name] = a.Expr
				}
			}
		}
		if len(sensitive) == 0 {
			t.Errorf("hcl block %d declares no sensitive variable: the database password should be one", i+1)
		}

		// reaches lists what expr refers to, following locals: variables
		// as "var.x", resources as their full traversal.
		var reaches func(expr hclsyntax.Expression, seen map[string]bool) []string
		reaches = func(expr hclsyntax.Expression, seen map[string]bool) []string {
			var out []string
			for _, tr := range expr.Variables() {
				var parts []string
				for _, step := range tr {
					switch s := step.(type) {
					case hcl.TraverseRoot:
						parts = append(parts, s.Name)
					case hcl.TraverseAttr:
						parts = append(parts, s.Name)
					}
				}
				ref := strings.Join(parts, ".")
				if parts[0] == "local" && len(parts) > 1 && !seen[parts[1]] {
					seen[parts[1]] = true
					if e, ok := locals[parts[1]]; ok {
						out = append(out, reaches(e, seen)...)
					}
					continue
				}
				out = append(out, ref)
			}
			return out
		}

		apps := 0
		for _, blk := range body.Blocks {
			if blk.Type != "resource" || len(blk.Labels) != 2 || blk.Labels[0] != "argocd_application" {
				continue
			}
			apps++
			app := blk.Labels[1]
			var refs []string
			var walk func(*hclsyntax.Body, bool)
			walk = func(b *hclsyntax.Body, inHelm bool) {
				if inHelm {
					for _, a := range b.Attributes {
						refs = append(refs, reaches(a.Expr, map[string]bool{})...)
					}
				}
				for _, nested := range b.Blocks {
					walk(nested.Body, inHelm || nested.Type == "helm")
				}
			}
			walk(blk.Body, false)

			namesSecret := false
			for _, ref := range refs {
				if name, ok := strings.CutPrefix(ref, "var."); ok && sensitive[name] {
					t.Errorf("argocd_application.%s: the sensitive var.%s reaches its Helm values", app, name)
				}
				if strings.HasPrefix(ref, "kubernetes_secret_v1.") {
					if strings.Contains(ref, ".data") {
						t.Errorf("argocd_application.%s: Secret data %s reaches its Helm values", app, ref)
					}
					namesSecret = namesSecret || strings.HasSuffix(ref, ".metadata.name")
				}
			}
			if !namesSecret {
				t.Errorf("argocd_application.%s: its Helm values name no Secret Terraform writes (refers to %v)", app, refs)
			}
		}
		if apps != 2 {
			t.Errorf("hcl block %d has %d argocd_application resources, want 2 (the database and the service)", i+1, apps)
		}
	}
}
