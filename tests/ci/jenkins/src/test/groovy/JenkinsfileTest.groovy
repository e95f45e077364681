import com.lesfurets.jenkins.unit.BasePipelineTest
import org.junit.Before
import org.junit.Test

/**
 * The Jenkinsfile run by JenkinsPipelineUnit for the builds Jenkins would run: a merge request
 * that trains, a docs-only one, main, a release tag, a retraining build. Each checks which stages
 * and make targets run, on which agents, with which environment, and that every unstash has a
 * stash made before it in a stage that ran (an agent's workspace starts empty).
 * The same commands as .gitlab-ci.yml, read from it: one CI, two engines.
 */
class JenkinsfileTest extends BasePipelineTest {
    static final File JENKINSFILE = new File(System.getProperty('jenkinsfile'))
    static final File REPO = JENKINSFILE.parentFile
    DeclarativeModel model

    @Before
    void setUp() {
        super.setUp()
        model = new DeclarativeModel()
        helper.registerAllowedMethod('pipeline', [Closure], { Closure body -> model.read(body) })
        helper.registerAllowedMethod('sh', [String], { String c -> model.sh(c) })
        helper.registerAllowedMethod('stash', [Map], { Map a -> model.stash(a) })
        helper.registerAllowedMethod('unstash', [String], { String n -> model.unstash(n) })
        helper.registerAllowedMethod('junit', [String], { })
        helper.registerAllowedMethod('junit', [Map], { })
        helper.registerAllowedMethod('catchError', [Map, Closure], { Map a, Closure c ->
            try { c() } catch (Exception e) { }
        })
    }

    DeclarativeModel build(Map scenario, String text = JENKINSFILE.text) {
        model = new DeclarativeModel()  // one build per model: the registered steps read this field
        File file = File.createTempFile('Jenkinsfile', '.groovy')
        file.text = text
        Script script = helper.loadScript(file.path, binding)
        model.script = script
        script.run()
        model.run(new DeclarativeModel.Scenario(scenario), [WORKSPACE: '/ws', GIT_COMMIT: 'abc'])
        return model
    }

    List<String> commands(DeclarativeModel m) { m.shells*.command }

    static final Map MR_TRAINING = [branch: 'feature', changeRequest: true, changes: ['models/digits/params.yaml']]
    static final Map MR_DOCS = [branch: 'feature', changeRequest: true, changes: ['README.md', 'docs/CI.md']]
    static final Map MAIN = [branch: 'main', changes: ['ml/stages/train.py']]
    static final Map TAG = [tag: 'digits-classifier/v1.2.3']
    static final Map RETRAIN = [branch: 'main', changes: [],
                                params: [RETRAIN: true, RETRAIN_MODEL: 'digits', RETRAIN_REASON: 'drift']]

    @Test
    void a_merge_request_that_trains_reports_after_the_rehearsal() {
        def m = build(MR_TRAINING)
        assert commands(m) == ['make ci-plan', 'make test', 'make ci-train',
                               'make manifests-ci', 'make kubeconform', 'make ci-rehearse',
                               'make perf-gate', 'make mr-report']
        assert m.shells.find { it.command == 'make ci-train' }.agent == 'gpu'
        assert m.shells.find { it.command == 'make mr-report' }.env.REPO_TOKEN == 'credential:gitlab-repo-token'
        // the calls went through JenkinsPipelineUnit's interception
        assert helper.callStack.findAll { it.methodName == 'sh' }.size() == 8
        assert helper.callStack.any { it.methodName == 'unstash' && it.args[0] == 'rehearsal' }
    }

    @Test
    void a_docs_only_merge_request_allocates_no_gpu() {
        def m = build(MR_DOCS)
        assert !('make ci-train' in commands(m))
        assert !m.agentsAllocated.containsKey('gpu')
        assert 'train on GPU' in m.skipped
    }

    @Test
    void main_builds_and_scans_with_the_registry_credential_and_the_commit() {
        def m = build(MAIN)
        assert commands(m).containsAll(['make ci-train', 'sh scripts/sh/build_image.sh serving',
                                        'sh scripts/sh/scan_image.sh trainer', 'make ci-rehearse'])
        assert !('make mr-report' in commands(m)) && !commands(m).any { it.startsWith('make release') }
        def build = m.shells.find { it.command == 'sh scripts/sh/build_image.sh serving' }
        assert build.agent == 'kaniko'
        // what scripts/sh/ci_env.sh maps to GitLab's names (tests/ci/test_image_scripts.py)
        assert build.env.REGISTRY_USR && build.env.REGISTRY_PSW && build.env.CI_REGISTRY
        assert build.env.GIT_COMMIT
        assert m.shells.find { it.command.contains('scan_image') }.agent == 'trivy'
    }

    @Test
    void a_tag_fetches_builds_releases_in_ci_mode_and_promotes_holding_no_executor() {
        def m = build(TAG)
        assert commands(m) == ['make ci-plan', 'make test', 'make model-pull',
                               'sh scripts/sh/build_image.sh serving', 'sh scripts/sh/build_image.sh trainer',
                               'sh scripts/sh/scan_image.sh serving', 'sh scripts/sh/scan_image.sh trainer',
                               'make manifests-ci', 'make kubeconform',
                               'make release TAG=$TAG_NAME', 'make promote TAG=$TAG_NAME']
        def release = m.shells.find { it.command.startsWith('make release') }
        // CI=true makes `make release` push; the registry lookup and the push need these
        assert release.env.CI == 'true' && release.env.TAG_NAME == 'digits-classifier/v1.2.3'
        assert release.env.MLFLOW_TRACKING_TOKEN && release.env.GIT_PUSH_TOKEN
        // scripts/release.py configure_push: the push URL and the token's credential helper
        assert release.env.CI_SERVER_URL && release.env.CI_PROJECT_PATH
        def promote = m.shells.find { it.command.startsWith('make promote') }
        assert promote.env.GIT_PUSH_TOKEN && promote.env.CI_SERVER_URL
        assert m.inputs.size() == 1
        def wait = m.inputs[0]
        assert wait.stage == 'promote' && wait.agent == null, "input holds agent ${wait.agent}"
        assert wait.timeouts == [[time: 7, unit: 'DAYS']], 'the input must not count against 90 min'
    }

    @Test
    void the_automatic_stages_have_ninety_minutes() {
        def m = build(MAIN)
        def ci = m.root.stages.find { it.name == 'ci' }
        assert ci.options.timeout == [time: 90, unit: 'MINUTES']
        assert m.root.stages*.name == ['ci', 'promote']
    }

    @Test
    void a_retraining_build_trains_the_named_model_and_proposes_it() {
        def m = build(RETRAIN)
        assert m.parameters.keySet() == ['RETRAIN', 'RETRAIN_MODEL', 'RETRAIN_REASON', 'RETRAIN_KEY', 'RETRAIN_SEED'] as Set
        assert commands(m).containsAll(['make ci-train', 'make propose-retrain'])
        def train = m.shells.find { it.command == 'make ci-train' }
        assert train.env.RETRAIN == 'true' && train.env.RETRAIN_MODEL == 'digits'
        assert m.shells.find { it.command == 'make propose-retrain' }.env.RETRAIN_REASON == 'drift'
        assert !build(MAIN).shells.any { it.command == 'make propose-retrain' }
    }

    @Test
    void every_stage_that_runs_make_has_the_plan_and_model_it_reads() {
        // a fresh workspace per agent: the plan and model must be unstashed where they are read
        def needsPlan = /ci-train|model-pull|build_image|scan_image|ci-rehearse|perf-gate|mr-report|propose/
        def needsModel = /build_image|ci-rehearse|perf-gate|mr-report|propose/
        for (scenario in [MR_TRAINING, MR_DOCS, MAIN, TAG, RETRAIN]) {
            setUp()
            def m = build(scenario)
            m.shells.findAll { it.command =~ needsPlan }.each { assert 'plan' in it.workspace, it.command }
            m.shells.findAll { it.command =~ needsModel }.each { assert 'model' in it.workspace, it.command }
            m.shells.findAll { it.command == 'make mr-report' }.each { assert 'rehearsal' in it.workspace }
        }
    }

    @Test
    void a_stage_that_forgets_an_unstash_is_caught() {
        // rehearse without the model (issue 19: exit 3 on Jenkins)
        String broken = JENKINSFILE.text.replaceFirst(
                /(?s)(stage\('rehearse'\).*?)unstash 'model'\n/, '$1')
        try {
            every_stage_with(broken)
            assert false, 'rehearse ran without the model and nothing noticed'
        } catch (AssertionError e) {
            assert e.message.contains('make ci-rehearse')
        }
    }

    void every_stage_with(String text) {
        def m = build(MAIN, text)
        m.shells.findAll { it.command =~ /ci-rehearse/ }.each { assert 'model' in it.workspace, it.command }
    }

    @Test
    void an_unstash_with_no_stash_before_it_fails_the_build() {
        String broken = JENKINSFILE.text.replace(
                "stash name: 'rehearsal', includes: 'reports/rehearsal/**', allowEmpty: true", "echo 'no stash'")
        helper.registerAllowedMethod('echo', [String], { })
        try {
            build(MR_TRAINING, broken)
            assert false, 'the report unstashed a rehearsal nobody stashed'
        } catch (IllegalStateException e) {
            assert e.message.contains("unstash 'rehearsal'")
        }
    }

    @Test
    void an_input_inside_an_agent_is_caught() {
        String broken = JENKINSFILE.text.replace("agent none", "agent { label 'linux' }")
        def m = build(TAG, broken)
        assert m.inputs[0].agent == 'pipeline'
    }

    @Test
    void an_environment_block_with_unknown_syntax_is_caught() {
        // Jenkins refuses a misspelled helper in `environment`; so must the model, not record it
        String broken = JENKINSFILE.text.replace("credentials('mlflow-token')", "credential('mlflow-token')")
        assert broken != JENKINSFILE.text
        try {
            build(MAIN, broken)
            assert false, 'the model read credential(...) in an environment block'
        } catch (MissingMethodException e) {
            assert e.method == 'credential'
        }
    }

    @Test
    void jenkins_runs_the_commands_gitlab_runs() {
        def gitlab = ((REPO.toPath().resolve('.gitlab-ci.yml').text =~ /(?m)^    - ((?:make|sh) .+)$/)
                .collect { it[1].replace('$CI_COMMIT_TAG', '$TAG_NAME') }) as Set
        gitlab.remove('make cml-runner')  // Jenkins has a static GPU agent instead of CML's
        def jenkins = [] as Set
        for (scenario in [MR_TRAINING, MAIN, TAG, RETRAIN]) {
            setUp()
            jenkins.addAll(commands(build(scenario)))
        }
        assert jenkins == gitlab
        def targets = (REPO.toPath().resolve('Makefile').text =~ /(?m)^([a-z][a-z-]*):/).collect { it[1] } as Set
        jenkins.findAll { it.startsWith('make ') }.each { assert it.split()[1] in targets }
    }
}
