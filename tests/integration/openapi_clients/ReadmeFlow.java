// The README's flow through the Java clients OpenAPI Generator makes from the served
// documents (library `native`, java.net.http.HttpClient as it comes: HTTP/2 first, so an
// h2c upgrade offer on http://). No interceptor: the token goes in the per-call headers the
// generated methods take. Run by tests/integration/test_openapi_clients.py.
//
//   java ReadmeFlow IDENTITY_URL INTAKE_URL DESK_ID:SECRET READER_ID:SECRET

import java.util.List;
import java.util.Map;
import java.util.UUID;

import vn.gov.gateway.identity.api.AgencyTokensApi;
import vn.gov.gateway.intake.ApiClient;
import vn.gov.gateway.intake.ApiException;
import vn.gov.gateway.intake.ApiResponse;
import vn.gov.gateway.intake.api.DossiersApi;
import vn.gov.gateway.intake.model.ApplicantIn;
import vn.gov.gateway.intake.model.DossierIn;
import vn.gov.gateway.intake.model.DossierOut;
import vn.gov.gateway.intake.model.Problem;
import vn.gov.gateway.intake.model.StepOut;

public class ReadmeFlow {
    static final Map<String, Object> FORM = Map.of(
        "child_full_name", "Trần Minh Khôi",
        "child_birth_date", "2026-11-01",
        "child_gender", "Nam",
        "mother_full_name", "Nguyễn Thị Lan",
        "residence_address", "Số 12, thôn Đông, xã Tân Phong");

    public static void main(String[] args) throws Exception {
        String identityUrl = args[0], intakeUrl = args[1];
        Map<String, String> desk = bearer(token(identityUrl, args[2], "dossiers:submit dossiers:read"));
        Map<String, String> reader = bearer(token(identityUrl, args[3], "dossiers:read"));

        ApiClient client = new ApiClient();
        client.updateBaseUri(intakeUrl);
        DossiersApi dossiers = new DossiersApi(client);
        DossierIn body = new DossierIn()
            .procedureCode("LT.KS-TT-BHYT")
            .applicant(new ApplicantIn().personalId("001090012345").fullName("Nguyễn Thị Lan")
                .email("lan@example.vn"))
            .formData(FORM);
        String key = "java-client-" + UUID.randomUUID();

        ApiResponse<DossierOut> first = dossiers.submitDossierWithHttpInfo(body, key, null, desk);
        check(first.getStatusCode() == 201, "submitted: 201, got " + first.getStatusCode());
        String code = first.getData().getCode();
        check(("/v1/dossiers/" + code).equals(header(first, "location")), "Location of " + code);

        ApiResponse<DossierOut> replay = dossiers.submitDossierWithHttpInfo(body, key, null, desk);
        check(replay.getStatusCode() == 200, "replayed: 200, got " + replay.getStatusCode());
        check(code.equals(replay.getData().getCode()), "the replay answers the same dossier");
        check("true".equals(header(replay, "idempotent-replayed")), "Idempotent-Replayed: true");

        DossierOut read = null;
        for (long deadline = System.nanoTime() + 90_000_000_000L; System.nanoTime() < deadline; ) {
            read = dossiers.getDossier(code, desk);
            if (read.getStatus() == DossierOut.StatusEnum.COMPLETED) break;
            Thread.sleep(500);
        }
        check(read.getStatus() == DossierOut.StatusEnum.COMPLETED, "completed: " + read.getStatus());
        for (StepOut step : read.getSteps()) {
            check(step.getStatus() == StepOut.StatusEnum.COMPLETED, "step " + step.getName());
        }

        Problem unauthorized = problem(client, () -> dossiers.getDossier(code, bearer("not-a-token")));
        check(unauthorized.getStatus() == 401, "401 as a Problem");
        Problem forbidden = problem(client, () -> dossiers.submitDossier(body, null, null, reader));
        check(forbidden.getStatus() == 403, "403 as a Problem");
        Problem missing = problem(client, () -> dossiers.getDossier("000.00.01.H22-000101-9999", desk));
        check(missing.getStatus() == 404, "404 as a Problem");
        DossierIn incomplete = new DossierIn().procedureCode("LT.KS-TT-BHYT")
            .applicant(body.getApplicant()).formData(Map.of("child_full_name", "Trần Minh Khôi"));
        Problem invalid = problem(client, () -> dossiers.submitDossier(incomplete, null, null, desk));
        check(invalid.getStatus() == 422, "422 as a Problem");
        check(invalid.getAdditionalProperty("missing_fields") instanceof List, "missing_fields");
        System.out.println("README flow completed: " + code);
    }

    static String token(String identityUrl, String credentials, String scope) throws Exception {
        String[] idAndSecret = credentials.split(":", 2);
        vn.gov.gateway.identity.ApiClient client = new vn.gov.gateway.identity.ApiClient();
        client.updateBaseUri(identityUrl);
        // client_secret_post: the form carries the client's id and secret.
        return new AgencyTokensApi(client)
            .requestToken("client_credentials", scope, idAndSecret[0], idAndSecret[1], null, null)
            .getAccessToken();
    }

    static Map<String, String> bearer(String token) {
        return Map.of("Authorization", "Bearer " + token);
    }

    static String header(ApiResponse<?> response, String name) {
        for (Map.Entry<String, List<String>> entry : response.getHeaders().entrySet()) {
            if (entry.getKey().equalsIgnoreCase(name)) return entry.getValue().get(0);
        }
        return null;
    }

    interface Call {
        Object run() throws ApiException;
    }

    /** The problem document of a refused call, as the generated model. */
    static Problem problem(ApiClient client, Call call) throws Exception {
        try {
            call.run();
        } catch (ApiException refused) {
            check(refused.getResponseHeaders().firstValue("content-type").orElse("")
                .startsWith("application/problem+json"), "problem+json");
            Problem problem = client.getObjectMapper().readValue(refused.getResponseBody(), Problem.class);
            check(refused.getCode() == problem.getStatus(), "status in the body");
            check(problem.getType() != null && problem.getTitle() != null, "type and title");
            return problem;
        }
        throw new AssertionError("the call was not refused");
    }

    static void check(boolean condition, String what) {
        if (!condition) throw new AssertionError(what);
    }
}
