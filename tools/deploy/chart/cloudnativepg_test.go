package chart

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	cnpgv1 "github.com/cloudnative-pg/api/pkg/api/v1"
	machineryapi "github.com/cloudnative-pg/machinery/pkg/api"
	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/agynio/users/tools/deploy/internal/repo"
	"github.com/agynio/users/tools/deploy/kube"
)

// The example the service's README builds its production database from.
var cnpgExample = []string{"helm", "users", "examples", "cloudnative-pg.yaml"}

// barmanCloudPlugin is the Barman Cloud Plugin's name, by which a Cluster
// and a ScheduledBackup call it.
const barmanCloudPlugin = "barman-cloud.cloudnative-pg.io"

// appSecretKeys are the keys of the <cluster>-app Secret CloudNativePG
// writes for the database's owner (pkg/specs/secrets.go, CreateSecret, of
// CloudNativePG 1.30), and caSecretKeys those of <cluster>-ca, its
// servers' CA (docs/src/certificates.md).
var (
	appSecretKeys = []string{"username", "user", "password", "dbname", "host", "port", "pgpass", "uri", "jdbc-uri", "fqdn-uri", "fqdn-jdbc-uri"}
	caSecretKeys  = []string{"ca.crt", "ca.key"}
)

// cnpgObjects is the example, strictly decoded.
type cnpgObjects struct {
	secrets   map[string]*corev1.Secret
	stores    map[string]*kube.ObjectStore
	cluster   *cnpgv1.Cluster
	scheduled []*cnpgv1.ScheduledBackup
}

func decodeExample(t *testing.T) cnpgObjects {
	t.Helper()
	src, err := os.ReadFile(repo.Path(t, cnpgExample...))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kube.Decode(src)
	if err != nil {
		t.Fatalf("%s does not decode strictly:\n%v", filepath.Join(cnpgExample...), err)
	}
	ex := cnpgObjects{secrets: map[string]*corev1.Secret{}, stores: map[string]*kube.ObjectStore{}}
	for _, o := range objs {
		switch v := o.Object.(type) {
		case *corev1.Secret:
			ex.secrets[v.Name] = v
		case *kube.ObjectStore:
			ex.stores[v.Name] = v
		case *cnpgv1.Cluster:
			if ex.cluster != nil {
				t.Fatalf("two Clusters: %s and %s", ex.cluster.Name, v.Name)
			}
			ex.cluster = v
		case *cnpgv1.ScheduledBackup:
			ex.scheduled = append(ex.scheduled, v)
		default:
			t.Errorf("%s: a kind the example has no use for", o)
		}
	}
	if ex.cluster == nil {
		t.Fatal("no Cluster")
	}
	return ex
}

// keys is what a Secret of the example holds, by name and key, together
// with what CloudNativePG writes for its Cluster.
func (ex cnpgObjects) keys() map[string][]string {
	keys := map[string][]string{
		ex.cluster.Name + cnpgv1.ApplicationUserSecretSuffix: appSecretKeys,
		ex.cluster.Name + cnpgv1.DefaultServerCaSecretSuffix: caSecretKeys,
	}
	for name, s := range ex.secrets {
		for k := range s.StringData {
			keys[name] = append(keys[name], k)
		}
		for k := range s.Data {
			keys[name] = append(keys[name], k)
		}
	}
	return keys
}

// serveRole is the managed role the service's pods connect as.
func (ex cnpgObjects) serveRole() *cnpgv1.RoleConfiguration {
	if ex.cluster.Spec.Managed == nil {
		return nil
	}
	for i, r := range ex.cluster.Spec.Managed.Roles {
		if r.Name == "users_serve" {
			return &ex.cluster.Spec.Managed.Roles[i]
		}
	}
	return nil
}

// holds reports whether a Secret of the example, or one CloudNativePG
// writes, has the key.
func (ex cnpgObjects) holds(name, key string) bool {
	return slices.Contains(ex.keys()[name], key)
}

// TestCloudNativePGExample: every document of the example decodes into its
// type (CloudNativePG's API module for Cluster and ScheduledBackup, the
// Barman Cloud Plugin's ObjectStore, core Secrets), and the example is
// what the README says: three instances of PostgreSQL 15 or later, the
// database users in UTF8 owned by users_owner, the serve role managed
// with its password from a Secret that also holds the service's URL to
// the read-write Service, verified, every WAL archived to an object store
// with a retention policy, nightly base backups, and the role settings of
// sql/roles.sql.
func TestCloudNativePGExample(t *testing.T) {
	t.Parallel()
	ex := decodeExample(t)
	c := ex.cluster

	if c.Spec.Instances != 3 {
		t.Errorf("instances %d, want 3: a primary and two replicas", c.Spec.Instances)
	}
	if major := imageMajor(t, c.Spec.ImageName); major < 15 {
		t.Errorf("image %s is PostgreSQL %d, want 15 or later", c.Spec.ImageName, major)
	}
	if c.Spec.Bootstrap == nil || c.Spec.Bootstrap.InitDB == nil {
		t.Fatal("no bootstrap.initdb")
	}
	initdb := c.Spec.Bootstrap.InitDB
	if initdb.Database != "users" || initdb.Owner != "users_owner" || initdb.Encoding != "UTF8" {
		t.Errorf("initdb database %q owner %q encoding %q, want users, users_owner, UTF8", initdb.Database, initdb.Owner, initdb.Encoding)
	}
	if initdb.Secret != nil {
		t.Errorf("initdb.secret %s: the README relies on CloudNativePG writing %s%s", initdb.Secret.Name, c.Name, cnpgv1.ApplicationUserSecretSuffix)
	}
	if diff := cmp.Diff(roleSettings(t), alterRoleSets(initdb.PostInitApplicationSQL)); diff != "" {
		t.Errorf("postInitApplicationSQL's ALTER ROLE ... SET differ from sql/roles.sql's (-roles.sql +example):\n%s", diff)
	}

	// The serve role, its Secret, and the URL the chart reads from it.
	serve := ex.serveRole()
	if serve == nil || !serve.Login || serve.PasswordSecret == nil {
		t.Fatalf("managed role users_serve %+v, want it with login and a passwordSecret", serve)
	}
	secret := ex.secrets[serve.PasswordSecret.Name]
	if secret == nil || secret.Type != corev1.SecretTypeBasicAuth || secret.StringData["username"] != serve.Name {
		t.Fatalf("the serve role's passwordSecret %s: %+v, want a basic-auth Secret of the example with username %s", serve.PasswordSecret.Name, secret, serve.Name)
	}
	u, err := url.Parse(secret.StringData["uri"])
	if err != nil {
		t.Fatalf("%s uri: %v", secret.Name, err)
	}
	password, _ := u.User.Password()
	want := url.URL{Scheme: "postgresql", User: url.UserPassword(serve.Name, secret.StringData["password"]), Host: c.Name + cnpgv1.ServiceReadWriteSuffix + "." + c.Namespace + ".svc:5432", Path: "/" + initdb.Database, RawQuery: "sslmode=verify-full"}
	got := url.URL{Scheme: u.Scheme, User: url.UserPassword(u.User.Username(), password), Host: u.Host, Path: u.Path, RawQuery: u.RawQuery}
	if got.String() != want.String() {
		t.Errorf("%s uri is %s, want %s: the serve role, to the read-write Service by a name its certificate carries, verified", secret.Name, u.Redacted(), want.Redacted())
	}

	// Continuous backup: every WAL archived, base backups on a schedule.
	var archiver *cnpgv1.PluginConfiguration
	for i, p := range c.Spec.Plugins {
		if p.Name == barmanCloudPlugin && p.IsWALArchiver != nil && *p.IsWALArchiver {
			archiver = &c.Spec.Plugins[i]
		}
	}
	if archiver == nil {
		t.Fatalf("no %s plugin archiving the WAL", barmanCloudPlugin)
	}
	store := ex.stores[archiver.Parameters["barmanObjectName"]]
	if store == nil {
		t.Fatalf("the WAL archiver's barmanObjectName %q names no ObjectStore of the example", archiver.Parameters["barmanObjectName"])
	}
	if !regexp.MustCompile(`^[1-9][0-9]*[dwm]$`).MatchString(store.Spec.RetentionPolicy) {
		t.Errorf("ObjectStore %s: retentionPolicy %q, want a recovery window such as 30d", store.Name, store.Spec.RetentionPolicy)
	}
	if s3 := store.Spec.Configuration.AWS; s3 != nil {
		for _, ref := range []*machineryapi.SecretKeySelector{s3.AccessKeyIDReference, s3.SecretAccessKeyReference} {
			if ref != nil && !ex.holds(ref.Name, ref.Key) {
				t.Errorf("ObjectStore %s reads key %s of Secret %s, which the example does not define", store.Name, ref.Key, ref.Name)
			}
		}
	}
	scheduled := false
	for _, b := range ex.scheduled {
		if b.Spec.Cluster.Name == c.Name && b.Spec.Method == cnpgv1.BackupMethodPlugin && b.Spec.PluginConfiguration != nil && b.Spec.PluginConfiguration.Name == barmanCloudPlugin {
			scheduled = true
		}
	}
	if !scheduled {
		t.Errorf("no ScheduledBackup of %s through %s", c.Name, barmanCloudPlugin)
	}
}

// imageMajor is the PostgreSQL major version of a CloudNativePG image, from
// its tag, as the operator reads it.
func imageMajor(t *testing.T, image string) int {
	t.Helper()
	m := regexp.MustCompile(`:([0-9]+)`).FindStringSubmatch(image)
	if m == nil {
		t.Fatalf("image %q has no tag starting with a PostgreSQL major version", image)
	}
	major, _ := strconv.Atoi(m[1])
	return major
}

// alterRoleSets returns the ALTER ROLE ... SET statements among sql, as
// written, without a closing semicolon.
func alterRoleSets(sql []string) []string {
	var out []string
	for _, s := range sql {
		s = strings.TrimSuffix(strings.TrimSpace(s), ";")
		if regexp.MustCompile(`(?i)^ALTER ROLE \S+ SET `).MatchString(s) {
			out = append(out, s)
		}
	}
	return out
}

// roleSettings are the ALTER ROLE ... SET statements of sql/roles.sql, for
// its default role names.
func roleSettings(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile(repo.Path(t, "sql", "roles.sql"))
	if err != nil {
		t.Fatal(err)
	}
	defaults := strings.NewReplacer(`:"owner_role"`, "users_owner", `:"serve_role"`, "users_serve")
	settings := alterRoleSets(strings.Split(defaults.Replace(string(src)), "\n"))
	if len(settings) == 0 {
		t.Fatal("sql/roles.sql has no ALTER ROLE ... SET")
	}
	return settings
}

// productionDatabase is the README's Production database section.
func productionDatabase(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(repo.Path(t, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(src)
	start := strings.Index(doc, "\n### Production database\n")
	if start < 0 {
		t.Fatal("README.md has no ### Production database section")
	}
	section := doc[start+1:]
	if end := regexp.MustCompile(`\n##{1,2} `).FindStringIndex(section[1:]); end != nil {
		section = section[:end[0]+1]
	}
	return section
}

// yamlBlocks returns the ```yaml blocks of a README section.
func yamlBlocks(section string) []string {
	var blocks []string
	for _, b := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(section, -1) {
		blocks = append(blocks, b[1])
	}
	return blocks
}

// TestCloudNativePGChartValues: the chart, rendered with the values the
// README's Production database section gives, reads its DATABASE_URLs
// (the pods' and the migration Job's) and its CA from Secrets and keys
// that the example defines or that CloudNativePG writes for its Cluster:
// the serve role's URL for the pods, the owner's for the Job, which
// grants the serve role its privileges, and the Cluster's CA for both.
func TestCloudNativePGChartValues(t *testing.T) {
	t.Parallel()
	ex := decodeExample(t)
	var values []string
	for _, b := range yamlBlocks(productionDatabase(t)) {
		var head struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(b), &head); err != nil {
			t.Fatal(err)
		}
		if head.Kind == "" {
			values = append(values, b)
		}
	}
	if len(values) != 1 {
		t.Fatalf("the Production database section has %d blocks of chart values, want 1", len(values))
	}
	file := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(file, []byte(values[0]), 0o600); err != nil {
		t.Fatal(err)
	}
	objs := decode(t, "-f", file)
	d := find[*appsv1.Deployment](t, objs)
	job := find[*batchv1.Job](t, objs)

	fromSecret := func(what string, c corev1.Container, wantKey string) {
		t.Helper()
		e, _ := envVar(c, "DATABASE_URL")
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("%s: DATABASE_URL %+v, want it from a Secret", what, e)
			return
		}
		ref := e.ValueFrom.SecretKeyRef
		if !ex.holds(ref.Name, ref.Key) {
			t.Errorf("%s: DATABASE_URL from key %s of Secret %s, which neither the example nor CloudNativePG (for Cluster %s) writes", what, ref.Key, ref.Name, ex.cluster.Name)
		}
		if ref.Name+"/"+ref.Key != wantKey {
			t.Errorf("%s: DATABASE_URL from %s/%s, want %s", what, ref.Name, ref.Key, wantKey)
		}
	}
	serve := ex.serveRole()
	if serve == nil || serve.PasswordSecret == nil {
		t.Fatal("the example manages no users_serve role with a passwordSecret")
	}
	serveSecret := serve.PasswordSecret.Name
	fromSecret("the service", container(t, d.Spec.Template.Spec, "users"), serveSecret+"/uri")
	migrate := container(t, job.Spec.Template.Spec, "migrate")
	fromSecret("the migration Job", migrate, ex.cluster.Name+cnpgv1.ApplicationUserSecretSuffix+"/uri")
	if role, _ := envVar(migrate, "DB_SERVE_ROLE"); role.Value != serve.Name {
		t.Errorf("the migration Job's DB_SERVE_ROLE %q, want %s, the managed role the pods connect as", role.Value, serve.Name)
	}

	for name, spec := range map[string]corev1.PodSpec{"users": d.Spec.Template.Spec, "migrate": job.Spec.Template.Spec} {
		ca := podDatabaseCA(t, spec, name)
		if ca.SSLMode != "verify-full" || !ex.holds(ca.Secret, ca.Key) || ca.Secret != ex.cluster.Name+cnpgv1.DefaultServerCaSecretSuffix {
			t.Errorf("container %s: database CA %+v, want verify-full with key ca.crt of %s%s", name, ca, ex.cluster.Name, cnpgv1.DefaultServerCaSecretSuffix)
		}
	}
}

// TestCloudNativePGRestore: the README's point-in-time recovery is a new
// Cluster, bootstrapped from the example's object store by the original
// cluster's name, to a time, keeping the database and its owner.
func TestCloudNativePGRestore(t *testing.T) {
	t.Parallel()
	ex := decodeExample(t)
	var restores []*cnpgv1.Cluster
	for _, b := range yamlBlocks(productionDatabase(t)) {
		if !strings.Contains(b, "kind:") {
			continue
		}
		objs, err := kube.Decode([]byte(b))
		if err != nil {
			t.Fatalf("a README block does not decode strictly:\n%v", err)
		}
		for _, o := range objs {
			if c, ok := o.Object.(*cnpgv1.Cluster); ok {
				restores = append(restores, c)
			}
		}
	}
	if len(restores) != 1 {
		t.Fatalf("the Production database section has %d Clusters, want 1, the restore", len(restores))
	}
	r := restores[0]
	var rec *cnpgv1.BootstrapRecovery
	if r.Spec.Bootstrap != nil {
		rec = r.Spec.Bootstrap.Recovery
	}
	if r.Name == ex.cluster.Name || rec == nil || rec.RecoveryTarget == nil || rec.RecoveryTarget.TargetTime == "" {
		t.Fatalf("restore %s: want a Cluster of a new name bootstrapped by recovery to a targetTime, got %+v", r.Name, rec)
	}
	if rec.Database != ex.cluster.Spec.Bootstrap.InitDB.Database || rec.Owner != ex.cluster.Spec.Bootstrap.InitDB.Owner {
		t.Errorf("recovery database %q owner %q, want the original's %q and %q", rec.Database, rec.Owner, ex.cluster.Spec.Bootstrap.InitDB.Database, ex.cluster.Spec.Bootstrap.InitDB.Owner)
	}
	var source *cnpgv1.ExternalCluster
	for i, e := range r.Spec.ExternalClusters {
		if e.Name == rec.Source {
			source = &r.Spec.ExternalClusters[i]
		}
	}
	if source == nil || source.PluginConfiguration == nil || source.PluginConfiguration.Name != barmanCloudPlugin {
		t.Fatalf("recovery source %q: %+v, want an external cluster read through %s", rec.Source, source, barmanCloudPlugin)
	}
	params := source.PluginConfiguration.Parameters
	if ex.stores[params["barmanObjectName"]] == nil || params["serverName"] != ex.cluster.Name {
		t.Errorf("recovery from ObjectStore %q, server %q; want the example's store, server %s", params["barmanObjectName"], params["serverName"], ex.cluster.Name)
	}
	if diff := cmp.Diff(ex.cluster.Spec.Managed, r.Spec.Managed); diff != "" {
		t.Errorf("the restore manages other roles than the original (-original +restore):\n%s", diff)
	}
}
