import java.nio.file.FileSystems
import java.nio.file.Paths

/**
 * Declarative pipeline syntax for JenkinsPipelineUnit 1.1 (the newest release on Maven Central,
 * which runs scripts and intercepts steps but predates declarative support). `pipeline {}` is
 * read into stages with their agent, when, input, environment, options and steps; run() then
 * walks them the way Jenkins does for one build (a Scenario: branch, tag, change request,
 * changed files, parameters): conditions decide what runs, each `agent` is a fresh workspace
 * holding only what is unstashed into it, `environment` and credentials reach the steps, and the
 * steps themselves (sh, stash, unstash, junit, catchError) go through JenkinsPipelineUnit's
 * interception, so they land in its call stack. Only the syntax the Jenkinsfile uses is known;
 * anything else is an error, so a new keyword makes the tests fail instead of passing unread.
 */
class DeclarativeModel {
    static class Stage {
        String name
        Map agent
        Closure when
        boolean beforeAgent
        boolean beforeInput
        String input
        Map<String, Object> environment = [:]
        Map options = [:]
        Closure steps
        Closure post
        List<Stage> stages = []
        boolean parallel
    }

    static class Scenario {
        String branch
        String tag
        boolean changeRequest
        List<String> changes = []
        Map<String, String> params = [:]
        String commit = '0123456789abcdef0123456789abcdef01234567'
    }

    /** One `sh` as Jenkins would run it: the command, its stage, agent label and environment. */
    static class Shell {
        String command
        String stage
        String agent
        Map<String, String> env
        Set<String> workspace  // the stashes this agent's workspace held when it ran
    }

    Stage root = new Stage(name: 'pipeline')
    Script script
    Map<String, Map> parameters = [:]

    // ---- reading -------------------------------------------------------------------------
    static class Credential {
        String id
        String toString() { "credential:${id}" }
    }

    static class EnvReader extends BlockReader {  // no methodMissing: unknown syntax is an error
        def credentials(String id) { new Credential(id: id) }
        void setProperty(String name, value) { result[name] = value }
    }

    void read(Closure pipeline) {
        pipeline.delegate = new Reader(stage: root, model: this)
        pipeline.resolveStrategy = Closure.DELEGATE_ONLY
        pipeline()
    }

    // ---- conditions ----------------------------------------------------------------------
    class When {
        Scenario s
        Map env
        List<Boolean> results = []
        Stage stage

        def beforeAgent(boolean v) { stage.beforeAgent = v }
        def beforeInput(boolean v) { stage.beforeInput = v }
        def branch(String name) { results << (s.tag == null && !s.changeRequest && s.branch == name) }
        def buildingTag() { results << (s.tag != null) }
        def changeRequest() { results << s.changeRequest }
        def environment(Map m) { results << (String.valueOf(env[m.name]) == m.value) }
        def changeset(String glob) {
            // Ant-style and case-insensitive, as the plugin matches; `**/` may match nothing
            def matcher = FileSystems.default.getPathMatcher('glob:' + glob.toLowerCase())
            def alt = glob.contains('**/') ? FileSystems.default.getPathMatcher(
                    'glob:' + glob.toLowerCase().replace('**/', '')) : null
            results << s.changes.any { f ->
                def p = Paths.get(f.toLowerCase())
                matcher.matches(p) || (alt != null && alt.matches(p))
            }
        }
        def anyOf(Closure c) { results << nested(c).any() }
        def allOf(Closure c) { results << nested(c).every() }
        def not(Closure c) { results << !nested(c).every() }
        List<Boolean> nested(Closure c) {
            When inner = new When(s: s, env: env, stage: stage)
            c.delegate = inner
            c.resolveStrategy = Closure.DELEGATE_ONLY
            c()
            return inner.results
        }
        def methodMissing(String name, args) {
            throw new IllegalArgumentException("the model does not know the condition '${name}'")
        }
    }

    boolean passes(Stage stage, Scenario s, Map env) {
        if (stage.when == null) return true
        When w = new When(s: s, env: env, stage: stage)
        Closure c = stage.when.clone()
        c.delegate = w
        c.resolveStrategy = Closure.DELEGATE_ONLY
        c()
        return w.results.every()
    }

    // ---- running -------------------------------------------------------------------------
    /** What a run saw, for the tests to assert on. */
    List<String> ran = []
    List<String> skipped = []
    List<Shell> shells = []
    List<Map> inputs = []          // [stage, agent held while waiting, timeouts around it]
    Map<String, Integer> agentsAllocated = [:]
    Map<String, Set<String>> stashes = [:]    // name -> what it was made from
    String currentStage
    String currentAgent
    Set<String> workspace          // the stashes unstashed into the current agent's workspace
    Map<String, String> currentEnv
    List<Map> currentTimeouts = []

    void run(Scenario s, Map<String, String> baseEnv) {
        Map env = [:] + baseEnv + environmentOf(root)
        parameters.each { name, p -> env[name] = String.valueOf(s.params.containsKey(name) ? s.params[name] : p.defaultValue) }
        if (s.branch) env.BRANCH_NAME = s.branch
        if (s.tag) { env.TAG_NAME = s.tag; env.BRANCH_NAME = s.tag }
        if (s.changeRequest) { env.CHANGE_ID = '7'; env.CHANGE_TARGET = 'main' }
        assert root.agent != null, 'pipeline: no agent'
        runStages(root, s, env, root.agent.containsKey('none') ? null : 'pipeline', null)
    }

    private void runStages(Stage parent, Scenario s, Map env, String agent, Set<String> ws) {
        parent.stages.each { runStage(it, s, env, agent, ws) }
    }

    /** A stage's environment as its steps see it; a credential binds NAME (and, as a username/
     *  password credential does, NAME_USR and NAME_PSW) to a masked value naming its id. */
    static Map<String, String> environmentOf(Stage stage) {
        Map<String, String> out = [:]
        stage.environment.each { k, v ->
            out[k] = String.valueOf(v)
            if (v instanceof Credential) {
                out[k + '_USR'] = "user-of:${v.id}".toString()
                out[k + '_PSW'] = "password-of:${v.id}".toString()
            }
        }
        return out
    }

    private String label(Map agent) { agent.label ?: agent.toString() }

    private void runStage(Stage stage, Scenario s, Map env, String agent, Set<String> ws) {
        Map stageEnv = [:] + env + environmentOf(stage)
        List<Map> timeouts = currentTimeouts
        if (stage.options.timeout) {
            currentTimeouts = timeouts + [stage.options.timeout as Map]
        }
        try {
            boolean ok = passes(stage, s, stageEnv)  // conditions have no side effects
            boolean early = stage.beforeAgent || stage.beforeInput
            if (early && !ok) { skipped << stage.name; return }
            if (stage.input != null) {
                inputs << [stage: stage.name, agent: agent, timeouts: currentTimeouts, message: stage.input]
            }
            if (stage.agent != null) {
                agent = label(stage.agent)
                agentsAllocated[agent] = (agentsAllocated[agent] ?: 0) + 1
                ws = new HashSet<String>()   // a fresh workspace: the checkout, nothing else
            }
            if (!early && !ok) { skipped << stage.name; return }
            ran << stage.name
            if (stage.steps != null) {
                assert agent != null, "stage ${stage.name}: steps without an agent"
                currentStage = stage.name
                currentAgent = agent
                workspace = ws
                currentEnv = stageEnv
                callSteps(stage.steps)
                if (stage.post != null) callSteps(stage.post)
            }
            runStages(stage, s, stageEnv, agent, ws)
        } finally {
            currentTimeouts = timeouts
        }
    }


    private void callSteps(Closure body) {
        Closure c = body.clone()
        c.delegate = new Steps(script: script)
        c.resolveStrategy = Closure.DELEGATE_ONLY
        c()
    }

    // ---- steps, called through JenkinsPipelineUnit's interception --------------------------
    void sh(String command) {
        shells << new Shell(command: command, stage: currentStage, agent: currentAgent, env: currentEnv,
                workspace: new HashSet<String>(workspace))
    }

    void stash(Map args) {
        stashes[args.name] = [currentStage] as Set
        workspace << args.name
    }

    void unstash(String name) {
        if (!stashes.containsKey(name)) {
            throw new IllegalStateException("stage ${currentStage}: unstash '${name}': no such stash")
        }
        workspace << name
    }
}

class Reader {
    DeclarativeModel.Stage stage
    def propertyMissing(String name) {  // `agent none`
        if (name in ['none', 'any']) return name
        throw new MissingPropertyException(name, Reader)
    }
    DeclarativeModel model

    def agent(Closure body) { stage.agent = new MapReader().read(body) }
    def agent(String none) {
        assert none == 'none' || none == 'any'
        stage.agent = [(none): true]
    }
    def options(Closure body) { stage.options.putAll(new MapReader().read(body)) }
    def parameters(Closure body) { model.parameters.putAll(new MapReader().read(body)) }
    def environment(Closure body) { stage.environment.putAll(new DeclarativeModel.EnvReader().read(body)) }
    def when(Closure body) { stage.when = body }
    def input(Closure body) { stage.input = new MapReader().read(body).message }
    def steps(Closure body) { stage.steps = body }
    def post(Closure body) { stage.post = body }
    def stages(Closure body) { body.delegate = this; body.resolveStrategy = Closure.DELEGATE_ONLY; body() }
    def parallel(Closure body) { stage.parallel = true; stages(body) }
    def stage(String name, Closure body) {
        DeclarativeModel.Stage child = new DeclarativeModel.Stage(name: name)
        stage.stages << child
        Reader reader = new Reader(stage: child, model: model)
        body.delegate = reader
        body.resolveStrategy = Closure.DELEGATE_ONLY
        body()
    }
    def methodMissing(String name, args) {
        throw new IllegalArgumentException("the model does not know '${name}' in stage ${stage.name}")
    }
}


/** Runs a block with this reader as its only delegate; a subclass says what each call means. */
abstract class BlockReader {
    Map result = [:]
    Map read(Closure body) {
        body.delegate = this
        body.resolveStrategy = Closure.DELEGATE_ONLY
        body()
        return result
    }
}


/** agent/options/parameters/input blocks: every call becomes an entry, args kept. */
class MapReader extends BlockReader {
    def methodMissing(String name, args) {
        List list = args as List
        if (list.size() == 1 && list[0] instanceof Closure) {
            result[name] = new MapReader().read(list[0])
        } else if (name in ['booleanParam', 'string']) {
            result[list[0].name] = [type: name] + list[0]
        } else {
            result[name] = list.size() == 1 ? list[0] : list
        }
        return null
    }
}


/** Steps run against the script, whose methods JenkinsPipelineUnit intercepts. */
class Steps {
    Script script
    def always(Closure c) { c() }  // post { always { ... } }: this model has no failures
    def methodMissing(String name, args) { script.invokeMethod(name, args) }
}
